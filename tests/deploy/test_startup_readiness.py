"""A replica is not ready while its startup models are still being fetched: otherwise a load
balancer sends it traffic that ends in 404 (seen in the rolling restart, models from S3)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import free_port, stop_process

pytestmark = pytest.mark.slow  # starts a real server

HANDLER = '''
    def handle(data, context):
        if data is None:
            return None
        return ["ok" for _ in data]
'''


def slow_archive_server(archive: bytes, delay: float) -> tuple[http.server.HTTPServer, str]:
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Length", str(len(archive)))
            self.end_headers()
            self.wfile.write(archive)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_not_ready_until_startup_models_are_registered(tmp_path):
    (tmp_path / "h.py").write_text(textwrap.dedent(HANDLER))
    write_archive(ArchiveSpec(model_name="late", handler=str(tmp_path / "h.py"),
                              export_path=str(tmp_path)))
    archives, base = slow_archive_server((tmp_path / "late.mar").read_bytes(), delay=4.0)
    port = free_port()
    config = tmp_path / "config.properties"
    config.write_text(f"load_models=late={base}/late.mar\nallowed_urls={base}/.*\n")
    cmd = [sys.executable, "-m", "tsf.cli", "serve", "--ts-config", str(config),
           "--inference-address", f"http://127.0.0.1:{port}",
           "--management-address", "http://127.0.0.1:0", "--metrics-address",
           "http://127.0.0.1:0", "--workspace", str(tmp_path / "workspace")]
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                start_new_session=True)
    try:
        answers: list[tuple[int, int, int]] = []   # (/ping, /v2/health/ready, predict)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                ping = requests.get(f"http://127.0.0.1:{port}/ping", timeout=10).status_code
                ready = requests.get(f"http://127.0.0.1:{port}/v2/health/ready",
                                     timeout=10).status_code
                predict = requests.post(f"http://127.0.0.1:{port}/predictions/late",
                                        data=b"x", timeout=30).status_code
            except requests.ConnectionError:
                time.sleep(0.05)
                continue
            answers.append((ping, ready, predict))
            if predict == 200:
                break
            time.sleep(0.1)
        assert answers and answers[-1][2] == 200, (answers, (tmp_path / "server.log").read_text())
        assert any(a[2] == 404 for a in answers), "the fetch was not slow enough to observe"
        ready_while_missing = [a for a in answers if a[2] == 404 and (a[0] == 200 or a[1] == 200)]
        assert ready_while_missing == [], answers
    finally:
        stop_process(proc)
        archives.shutdown()

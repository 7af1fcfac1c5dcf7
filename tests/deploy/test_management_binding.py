"""The management API stays on loopback unless a management token is configured, through a
real ``tsf serve`` asked to listen on every interface (as the container image does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tsf.testing import stop_process

pytestmark = pytest.mark.slow  # starts real servers


def serve_everywhere(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, dict, Path]:
    ready = tmp_path / "ready.json"
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "tsf.cli", "serve", "--inference-address", "http://0.0.0.0:0",
           "--management-address", "http://0.0.0.0:0", "--metrics-address", "http://0.0.0.0:0",
           "--workspace", str(tmp_path / "workspace"), "--ready-file", str(ready)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env}, start_new_session=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"tsf serve did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text()), log


def listening_host(pid: int, port: int) -> str:
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
            return conn.laddr.ip
    raise AssertionError(f"nothing listens on port {port}")


def test_management_without_token_listens_on_loopback_only(tmp_path):
    env = {"TSF_MANAGEMENT_TOKEN": "", "TSF_AUTH_TOKEN_FILE": ""}
    proc, info, log = serve_everywhere(tmp_path, env)
    try:
        ports = info["ports"]
        assert listening_host(proc.pid, ports["management"]) == "127.0.0.1"
        assert listening_host(proc.pid, ports["inference"]) == "0.0.0.0"
        assert listening_host(proc.pid, ports["metrics"]) == "0.0.0.0"
        assert info["urls"]["management"] == f"http://127.0.0.1:{ports['management']}"
        assert "no management token is configured" in log.read_text()
        answer = requests.get(f"http://127.0.0.1:{ports['management']}/models", timeout=30)
        assert answer.status_code == 200
    finally:
        stop_process(proc)


def test_management_with_token_listens_where_asked_and_checks_the_token(tmp_path):
    proc, info, log = serve_everywhere(tmp_path, {"TSF_MANAGEMENT_TOKEN": "s3cret"})
    try:
        port = info["ports"]["management"]
        assert listening_host(proc.pid, port) == "0.0.0.0"
        assert "no management token" not in log.read_text()
        url = f"http://127.0.0.1:{port}/models"
        assert requests.get(url, timeout=30).status_code == 401
        authorized = requests.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert authorized.status_code == 200
    finally:
        stop_process(proc)

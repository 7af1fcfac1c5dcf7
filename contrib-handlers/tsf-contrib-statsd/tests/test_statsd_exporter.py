"""Metrics of a real server arrive at a UDP socket standing in for StatsD."""

from __future__ import annotations

import socket
import textwrap
import time

from tsf_contrib_statsd.exporter import format_line

from tsf.archives.writer import ArchiveSpec, write_archive

HANDLER = '''
    def handle(data, context):
        if data is None:
            return None
        context.metrics.add_counter("handled_rows", len(data), None)
        return [len(row.get("body") or b"") for row in data]
'''


def test_line_format():
    assert format_line("tsf.", "tsf_request_duration_seconds", "histogram", 0.0125,
                       {"model_name": "m", "kind": "predict"}) == \
        b"tsf.tsf_request_duration_seconds:12.5|ms|#kind:predict,model_name:m"
    assert format_line("", "tsf_batch_size", "histogram", 4, {}) == b"tsf_batch_size:4|h"
    assert format_line("", "rows", "counter", 2, {"a": "b"}) == b"rows:2|c|#a:b"


def test_metrics_reach_statsd(tsf_server, tmp_path):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.2)
    (tmp_path / "h.py").write_text(textwrap.dedent(HANDLER))
    write_archive(ArchiveSpec(model_name="counted", handler=str(tmp_path / "h.py"),
                              export_path=str(tmp_path / "store")))
    port = receiver.getsockname()[1]
    server = tsf_server(model_store=tmp_path / "store", models=["counted=counted.mar"],
                        env={"TSF_STATSD_ADDRESS": f"127.0.0.1:{port}",
                             "TSF_STATSD_PREFIX": "svc."})
    assert server.post("/predictions/counted", data=b"abc").json() == 3
    lines: list[str] = []
    deadline = time.monotonic() + 10
    wanted = ("svc.handled_rows", "svc.tsf_requests_total", "svc.tsf_request_duration_seconds")
    while time.monotonic() < deadline and not all(any(l.startswith(w) for l in lines)
                                                  for w in wanted):
        try:
            lines.append(receiver.recv(65535).decode())
        except socket.timeout:
            pass
    receiver.close()
    assert any(l.startswith("svc.tsf_requests_total:1|c|#code:200,kind:predict,"
                            "model_name:counted") for l in lines), lines
    assert any(l.startswith("svc.tsf_request_duration_seconds:") and "|ms|" in l
               for l in lines), lines
    assert any(l.startswith("svc.handled_rows:1|c") for l in lines), lines


def test_silent_without_an_address(tsf_server, tmp_path):
    (tmp_path / "h.py").write_text(textwrap.dedent(HANDLER))
    write_archive(ArchiveSpec(model_name="quiet", handler=str(tmp_path / "h.py"),
                              export_path=str(tmp_path / "store")))
    server = tsf_server(model_store=tmp_path / "store", models=["quiet=quiet.mar"])
    assert server.post("/predictions/quiet", data=b"ab").json() == 2
    plugins = server.manage("GET", "/plugins").json()["plugins"]
    statsd = next(p for p in plugins if p["name"] == "statsd")
    assert statsd["hooks"] == []

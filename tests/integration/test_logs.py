"""Server logs: JSON lines with request ids, and worker output tagged with worker and request."""

from __future__ import annotations

import json
import socket
import textwrap
import time

import pytest

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess

HANDLER = '''
    import logging

    log = logging.getLogger("chatty")

    def handle(data, context):
        if data is None:
            return None
        log.info("handling %d rows", len(data))
        return ["ok" for _ in data]
'''


@pytest.fixture(scope="module")
def chatty(tmp_path_factory):
    """A server with JSON logs and the ``chatty`` model, ready."""
    tmp_path = tmp_path_factory.mktemp("chatty")
    (tmp_path / "chatty.py").write_text(textwrap.dedent(HANDLER))
    write_archive(ArchiveSpec(model_name="chatty", handler=str(tmp_path / "chatty.py"),
                              export_path=str(tmp_path / "store")))
    server = ServerProcess(model_store=tmp_path / "store", models=["chatty=chatty.mar"],
                           config={"log_format": "json"})
    try:
        deadline = time.monotonic() + 60
        while server.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def _records(server: ServerProcess) -> list[dict]:
    time.sleep(0.3)
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def test_json_logs_carry_request_and_worker_ids(chatty):
    server = chatty
    r = server.post("/predictions/chatty", data=b"x", headers={"X-Request-Id": "req-42"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-42"
    missing = server.post("/predictions/nope", data=b"x", headers={"X-Request-Id": "req-43"})
    assert missing.status_code == 404 and missing.headers["X-Request-Id"] == "req-43"
    records = _records(server)
    access = [r for r in records if r["logger"] == "tsf.access"]
    assert any(r.get("request_id") == "req-42" and r["status"] == 200 for r in access), access
    assert any(r.get("request_id") == "req-43" and r["status"] == 404 for r in access), access
    handled = [r for r in records if "handling 1 rows" in r["message"]]
    assert handled, records
    assert handled[0]["model"] == "chatty" and handled[0]["worker_id"]
    assert "[req-42]" in handled[0]["message"]  # the worker tags lines with the batch's ids
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_credentials_in_request_lines_never_reach_the_log(chatty):
    server = chatty
    assert server.get("/ping?token=SECRET-A&verbose=1").status_code == 200
    answer = server.post("/predictions/chatty?access_token=SECRET-B", data=b"x",
                         headers={"Authorization": "Bearer SECRET-C"})
    assert answer.status_code == 200, answer.text
    # a presigned, password-carrying archive URL given to the register API (refused: remote)
    url = "https://alice:SECRET-D@models.example.com/m.mar?X-Amz-Signature=SECRET-E&v=1"
    assert server.manage("POST", "/models", params={"url": url}).status_code == 403
    host, port = server.inference.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # absolute form
        sock.sendall(b"GET http://bob:SECRET-F@127.0.0.1/ping?api_key=SECRET-G HTTP/1.1\r\n"
                     b"Host: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 ")
    records = _records(server)
    text = server.log()
    for secret in "ABCDEFG":
        assert f"SECRET-{secret}" not in text, [line for line in text.splitlines()
                                                if f"SECRET-{secret}" in line]
    access = [r["message"] for r in records if r["logger"] == "tsf.access"]
    assert any("/ping?token=REDACTED&verbose=1" in m for m in access), access
    assert any("/predictions/chatty?access_token=REDACTED" in m for m in access), access
    assert any("models.example.com" in m and "REDACTED" in m for m in access), access

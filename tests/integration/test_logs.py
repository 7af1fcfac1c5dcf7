"""Server logs: JSON lines with request ids, and worker output tagged with worker and request."""

from __future__ import annotations

import json
import textwrap
import time

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


def test_json_logs_carry_request_and_worker_ids(tmp_path):
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
        r = server.post("/predictions/chatty", data=b"x", headers={"X-Request-Id": "req-42"})
        assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-42"
        missing = server.post("/predictions/nope", data=b"x", headers={"X-Request-Id": "req-43"})
        assert missing.status_code == 404 and missing.headers["X-Request-Id"] == "req-43"
        time.sleep(0.3)
        records = [json.loads(line) for line in server.log().splitlines()
                   if line.startswith("{")]
    finally:
        server.stop()
    access = [r for r in records if r["logger"] == "tsf.access"]
    assert any(r.get("request_id") == "req-42" and r["status"] == 200 for r in access), access
    assert any(r.get("request_id") == "req-43" and r["status"] == 404 for r in access), access
    handled = [r for r in records if "handling 1 rows" in r["message"]]
    assert handled, records
    assert handled[0]["model"] == "chatty" and handled[0]["worker_id"]
    assert "[req-42]" in handled[0]["message"]  # the worker tags lines with the batch's ids
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)

"""Captured records survive a stop: every one on SIGTERM (the drain flushes the sinks), all but
the last second's on SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time

import pytest
import yaml

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess

HANDLER = '''
    def handle(data, context):
        if data is None:
            return None
        return [{"label": 1} for _ in data]
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    src, store = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("store")
    (src / "h.py").write_text(textwrap.dedent(HANDLER))
    for name, flush in (("slow", 3600), ("fast", 1)):
        (src / f"{name}.yaml").write_text(yaml.safe_dump({"capture": {
            "sinks": {"jsonl": {"flush_seconds": flush}}, "drift": False, "feedback": False}}))
        write_archive(ArchiveSpec(model_name=name, handler=str(src / "h.py"),
                                  config_file=str(src / f"{name}.yaml"), export_path=str(store)))
    return store


def records(server: ServerProcess) -> list[str]:
    ids = []
    for path in (server.workdir / "workspace" / "capture").rglob("*.jsonl"):
        ids += [json.loads(line)["eventMetadata"]["eventId"]
                for line in path.read_text().splitlines()]
    return ids


def send(server: ServerProcess, model: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        r = server.post(f"/predictions/{model}", json={"x": 1})
        assert r.status_code == 200, r.text
        ids.append(r.headers["X-Request-Id"])
    return ids


def test_sigterm_writes_every_captured_record(store):
    server = ServerProcess(model_store=store, models=["slow=slow.mar"])
    try:
        ids = send(server, "slow", 40)
        time.sleep(0.5)
        assert records(server) == []  # flush_seconds 3600: nothing written yet
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert sorted(records(server)) == sorted(ids)
        assert "capture sink" not in server.log()
    finally:
        server.stop()


def test_sigkill_loses_at_most_the_last_second(store):
    server = ServerProcess(model_store=store, models=["fast=fast.mar"])
    try:
        ids = send(server, "fast", 40)
        time.sleep(2.0)  # more than flush_seconds
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        server.proc.kill()
        server.proc.wait(10)
        assert sorted(records(server)) == sorted(ids)
    finally:
        server.stop()

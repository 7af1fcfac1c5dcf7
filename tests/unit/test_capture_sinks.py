"""Sink runners (threads, bounded queues, retries, shutdown), the JSON Lines sink and the
prediction store."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tsf.errors import BadRequest, Conflict, ResourceNotFound
from tsf.monitoring import sinks as sinks_module
from tsf.monitoring.jsonl_sink import JsonLinesSink
from tsf.monitoring.metrics import capture_counters
from tsf.monitoring.records import CaptureRecord
from tsf.monitoring.sinks import SinkContext, SinkRunner, build_sink
from tsf.monitoring.store import PredictionStore
from tsf.testing import wait_for


def record(i: int, at: float = 1796617777.0, body: bytes = b"{}") -> CaptureRecord:
    return CaptureRecord(f"r{i}", "m", "1", at, "application/json", body, len(body),
                         "application/json", b"1", 1)


class Recording:
    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.written: list[str] = []
        self.failures, self.gate, self.closed, self.calls = failures, gate, False, 0

    def write(self, records):
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise OSError("receiver down")
        self.written.extend(r.event_id for r in records)

    def close(self):
        self.closed = True


@pytest.fixture
def counters():
    return capture_counters(CollectorRegistry())


def value(counter, *labels) -> float:
    return counter.labels(*labels)._value.get()


def test_records_are_written_off_the_caller(counters):
    sink = Recording()
    runner = SinkRunner("rec", sink, 0.05, 100, 1 << 20, counters.sinks)
    for i in range(5):
        runner.offer(record(i))
    wait_for(lambda: len(sink.written) == 5, 5, "records not written")
    assert sink.written == [f"r{i}" for i in range(5)]
    assert value(counters.sinks.written, "rec") == 5
    assert runner.stop(5) and sink.closed


def test_a_failing_sink_is_retried_with_backoff_and_counted(counters, monkeypatch):
    monkeypatch.setattr(sinks_module, "BACKOFF_FIRST", 0.05)
    sink = Recording(failures=2)
    runner = SinkRunner("flaky", sink, 0.05, 100, 1 << 20, counters.sinks)
    runner.offer(record(0))
    wait_for(lambda: sink.written, 5, "not retried")
    runner.offer(record(1))
    wait_for(lambda: len(sink.written) == 2, 5, "later record not written")
    assert sink.written == ["r0", "r1"] and value(counters.sinks.errors, "flaky") == 2
    assert runner.stop(5)


def test_a_full_buffer_drops_and_counts(counters):
    gate = threading.Event()
    sink = Recording(gate=gate)
    runner = SinkRunner("slow", sink, 0.05, 3, 1 << 20, counters.sinks)
    runner.offer(record(0))
    wait_for(lambda: sink.calls == 1, 5, "first write not started")  # blocked in write
    for i in range(1, 8):
        runner.offer(record(i))
    assert value(counters.sinks.dropped, "slow", "buffer_full") == 4
    big = SinkRunner("bytes", Recording(gate=gate), 3600, 100, 10, counters.sinks)
    big.offer(record(0, body=b"x" * 8))
    big.offer(record(1, body=b"x" * 8))  # 16 bytes queued > 10
    assert value(counters.sinks.dropped, "bytes", "buffer_full") == 1
    gate.set()
    wait_for(lambda: len(sink.written) == 4, 5, "queued records not written")
    assert runner.stop(5) and big.stop(5)


def test_stop_flushes_what_is_queued_and_counts_what_cannot_be_written(counters):
    sink = Recording()
    runner = SinkRunner("later", sink, 3600, 100, 1 << 20, counters.sinks)
    for i in range(7):
        runner.offer(record(i))
    assert sink.written == []
    assert runner.stop(5)
    assert len(sink.written) == 7 and sink.closed
    down = SinkRunner("down", Recording(failures=99), 3600, 100, 1 << 20, counters.sinks)
    for i in range(3):
        down.offer(record(i))
    assert down.stop(5)
    assert value(counters.sinks.dropped, "down", "shutdown") == 3


def test_sinks_are_checked_by_name_and_options(tmp_path):
    context = SinkContext(tmp_path, tmp_path)
    classes = {"jsonl": JsonLinesSink}
    with pytest.raises(BadRequest, match="'nope', which no installed plugin provides"):
        build_sink(classes, "nope", {}, context)
    with pytest.raises(BadRequest, match="capture.sinks.jsonl.colour"):
        build_sink(classes, "jsonl", {"colour": 1}, context)
    with pytest.raises(BadRequest, match="capture.sinks.jsonl.flush_seconds"):
        build_sink(classes, "jsonl", {"flush_seconds": 0}, context)
    sink, flush = build_sink(classes, "jsonl", {"flush_seconds": 2, "dir": str(tmp_path)},
                             context)
    assert flush == 2.0 and sink.root == tmp_path


def test_jsonl_files_rotate_by_hour(tmp_path):
    sink = JsonLinesSink({}, SinkContext(tmp_path, tmp_path))
    first = 1796617777.0  # 04:29 UTC
    sink.write([record(0, first), record(1, first + 1)])
    sink.write([record(2, first + 3600)])  # the next hour: a new file
    sink.close()
    files = sorted(tmp_path.rglob("*.jsonl"))
    assert [str(p.parent.relative_to(tmp_path)) for p in files] == \
        ["m/1/2026/12/07/04", "m/1/2026/12/07/05"]
    lines = [json.loads(line) for p in files for line in p.read_text().splitlines()]
    assert [line["eventMetadata"]["eventId"] for line in lines] == ["r0", "r1", "r2"]
    assert files[0].name.startswith("29-37-000-")


def test_store_labels_once_and_stays_bounded(tmp_path: Path):
    store = PredictionStore(tmp_path / "m.sqlite3", max_predictions=5)
    now = time.time()
    # the prediction is read from the kept answer when a label comes (or a report asks)
    store.add([("m", f"r{i}", f"inf{i}", "1", now + i, None, None, '{"x": 1.0}',
                "application/json", b'{"label": 1}') for i in range(8)])
    store.add([("other", "o1", None, "1", now, "0", None, None, None, None)])
    assert store.prune("m") == 3
    with pytest.raises(ResourceNotFound, match="r0"):
        store.label("m", [("r0", "1", {})], now)  # pruned
    with pytest.raises(ResourceNotFound, match="o1"):
        store.label("m", [("o1", "1", {})], now)  # another model's id
    with pytest.raises(Conflict):
        store.label("m", [("r5", "1", {}), ("r5", "0", {})], now)  # twice in one call
    assert store.label("m", [("r5", "1", {"region": "eu"}), ("inf6", "0", {})], now) == 2
    with pytest.raises(Conflict):
        store.label("m", [("r7", "1", {}), ("r6", "1", {})], now)
    labelled = store.labelled("m", now - 1)
    assert sorted(labelled, key=str) == sorted([("1", "1", "1", {"region": "eu"}),
                                                ("1", "1", "0", {})], key=str)
    rows = store.rows("m")
    assert [r["id"] for r in rows] == ["r3", "r4", "r5", "r6", "r7"]
    assert rows[2] == {"id": "r5", "version": "1", "time": now + 5, "x": 1.0,
                       "prediction": "1", "label": "1", "group.region": "eu"}
    assert rows[4]["prediction"] == "1" and "label" not in rows[4]  # read for the report
    store.save_baseline("m", "1", [{"x": 1.0}], now)
    assert store.baseline("m", "1") == [{"x": 1.0}]
    store.close()
    reader = PredictionStore(tmp_path / "m.sqlite3", readonly=True)
    assert len(reader.rows("m")) == 5
    reader.close()


def test_the_front_end_starts_capturing_without_heavy_imports():
    """A server whose models capture to every installed sink loads neither pandas, fairlearn,
    Evidently, numpy, the cloudevents library nor boto3 (the sinks import theirs in their
    threads, the analysis thread fairlearn when groups have labels)."""
    import subprocess
    import sys

    code = ("import sys, asyncio\n"
            "from tsf.app import TsfServer\n"
            "from tsf.config.settings import ServerConfig\n"
            "from tsf.config.capture import capture_settings\n"
            "from tsf.monitoring.sinks import sink_classes\n"
            "async def main():\n"
            "    s = TsfServer(ServerConfig(inference_address='127.0.0.1:0',"
            " management_address='127.0.0.1:0', metrics_address='127.0.0.1:0'))\n"
            "    await s.start()\n"
            "    names = sorted(sink_classes(s.pm))\n"
            "    options = {'s3': {'url': 's3://b/p'}, 'cloudevents': {'url': 'http://x/'}}\n"
            "    s.monitor.check(capture_settings({'sinks': {n: options.get(n, {})"
            " for n in names}, 'groups': ['g']}))\n"
            "    s.metrics.registry.collect()\n"
            "    await s.stop()\n"
            "    print(','.join(names))\n"
            "asyncio.run(main())\n"
            "heavy = [m for m in ('pandas', 'fairlearn', 'evidently', 'numpy', 'cloudevents',"
            " 'boto3', 'sklearn', 'torch') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "jsonl" in result.stdout

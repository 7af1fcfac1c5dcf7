"""Where captured records go: sink plugins, each fed by a thread of its own from a bounded
queue, so no sink can block or slow a request.

A sink is a class a plugin returns from ``tsf_register_capture_sinks()`` (``{name: class}``).
tsf builds one instance per distinct set of options, as ``cls(options, context)``: the
constructor checks ``options`` (raising :class:`tsf.errors.BadRequest` naming the key) and
:class:`SinkContext` tells it where the server keeps its files.  The sink's ``write(records)``
is called from its thread with every record that arrived since the last call, at most every
``flush_seconds`` (an option every sink takes; default 1); it raises to fail the batch, which
is then retried with backoff (0.5 s doubling to 30 s) while new records queue behind it.
``close()`` is called once, after the last write.  A sink that spends interpreter time on each
record calls :func:`let_the_loop_run` as it goes.  Delivery is at least once: a retried batch
may repeat records a sink had partly written, and ids let readers drop duplicates.

The queue holds at most ``capture_buffer_records`` records and ``capture_buffer_mb`` of bodies;
records past either bound are dropped and counted (``tsf_capture_dropped_records_total``).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import BadRequest
from .records import CaptureRecord

log = logging.getLogger("tsf.capture")

MAX_BATCH = 5000
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
PAUSE = 0.0001  # seconds a busy capture thread lets the event loop run, every 64 records


class Sink(Protocol):
    def write(self, records: list[CaptureRecord]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need to know about the server that captures."""

    capture_dir: Path  # the built-in JSON Lines sink's folder (capture_dir, or workspace/capture)
    workspace: Path
    inference_url: str = ""  # the inference API's base URL, once the server listens


@dataclass
class SinkCounters:
    """The capture counters shared by every sink runner (prometheus_client, thread-safe)."""

    written: Any   # tsf_capture_sink_written_records_total{sink}
    errors: Any    # tsf_capture_sink_errors_total{sink}
    dropped: Any   # tsf_capture_dropped_records_total{sink, reason}


def check_options(sink: str, options: dict, known: tuple[str, ...]) -> None:
    """BadRequest naming the first option of ``options`` that the sink named ``sink`` does not
    take (sink plugins call it first)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BadRequest(f"capture.sinks.{sink}.{unknown[0]} is not an option of the {sink} "
                         f"sink (it takes {', '.join(known)})")


def flush_seconds(options: dict, prefix: str) -> float:
    value = options.get("flush_seconds", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.05 <= value <= 3600:
        raise BadRequest(f"{prefix}.flush_seconds must be a number from 0.05 to 3600, got "
                         f"{value!r:.60}")
    return float(value)


def sink_key(name: str, options: dict) -> str:
    """One runner per sink name and options."""
    return name + json.dumps(options, sort_keys=True, default=str)


class SinkRunner:
    """One sink, its bounded queue and the thread that writes to it."""

    def __init__(self, name: str, sink: Sink, flush: float, max_records: int, max_bytes: int,
                 counters: SinkCounters) -> None:
        self.name, self.sink, self.flush = name, sink, flush
        self.max_records, self.max_bytes = max_records, max_bytes
        self.queue: collections.deque[CaptureRecord] = collections.deque()
        self._bytes_in = 0   # written by the event loop only
        self._bytes_out = 0  # written by the sink's thread only
        self._written = counters.written.labels(name)
        self._errors = counters.errors.labels(name)
        self._full = counters.dropped.labels(name, "buffer_full")
        self._failing = counters.dropped.labels(name, "sink_failing")
        self._shutdown = counters.dropped.labels(name, "shutdown")
        self._pending: list[CaptureRecord] = []  # a failed batch, retried first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tsf-capture-{name}",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def size(record: CaptureRecord) -> int:
        return len(record.request_body or b"") + len(record.response_body or b"")

    def offer(self, record: CaptureRecord) -> None:
        """Queue a record (event loop); dropped and counted when the queue is full."""
        size = self.size(record)
        if len(self.queue) >= self.max_records or \
                self._bytes_in - self._bytes_out + size > self.max_bytes:
            self._full.inc()
            return
        self._bytes_in += size
        self.queue.append(record)

    def _take(self) -> list[CaptureRecord]:
        batch, queue = self._pending, self.queue
        self._pending = []
        while queue and len(batch) < MAX_BATCH:
            record = queue.popleft()
            self._bytes_out += self.size(record)
            batch.append(record)
        return batch

    def _write(self, batch: list[CaptureRecord]) -> bool:
        try:
            self.sink.write(batch)
        except Exception as exc:  # a sink's failure must never reach a request
            self._errors.inc()
            log.warning("capture sink %s failed to write %d record(s): %s", self.name,
                        len(batch), exc)
            return False
        self._written.inc(len(batch))
        return True

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.wait(max(self.flush, backoff)):
            batch = self._take()
            if not batch or self._write(batch):
                backoff = 0.0
                continue
            backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, backoff * 2))
            if len(batch) > self.max_records:  # keep the newest while the sink is down
                self._failing.inc(len(batch) - self.max_records)
                batch = batch[-self.max_records:]
            self._pending = batch
        self._drain()

    def _drain(self) -> None:
        """After stop: write what is queued (two tries per batch), then close the sink."""
        while self._pending or self.queue:
            batch = self._take()
            if not self._write(batch) and not self._write(batch):
                self._shutdown.inc(len(batch) + len(self.queue))
                self.queue.clear()
                break
        try:
            self.sink.close()
        except Exception as exc:
            log.warning("capture sink %s failed to close: %s", self.name, exc)

    def stop(self, timeout: float) -> bool:
        """Flush and close; False if the thread did not finish within ``timeout`` seconds."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()


def let_the_loop_run(index: int) -> None:
    """Hand the interpreter lock to the event loop every 64 records of a long batch: a thread
    that keeps it for its whole switch interval (5 ms) would hold answers back that long.  The
    pause is not zero: a thread that sleeps for no time takes the lock straight back unless the
    loop had already waited 5 ms for it."""
    if index & 63 == 63:
        time.sleep(PAUSE)


def sink_classes(pm: Any) -> dict[str, type]:
    """Every sink class the plugins provide, by name (a later plugin wins a clash)."""
    merged: dict[str, type] = {}
    for result in reversed(pm.hook.tsf_register_capture_sinks()):
        merged.update(result or {})
    return merged


def build_sink(classes: dict[str, type], name: str, options: dict, context: SinkContext
               ) -> tuple[Sink, float]:
    """A sink instance and its flush interval; BadRequest naming an unknown sink or a bad
    option."""
    prefix = f"capture.sinks.{name}"
    if name not in classes:
        raise BadRequest(f"capture.sinks names {name!r}, which no installed plugin provides "
                         f"(installed sinks: {', '.join(sorted(classes)) or 'none'})")
    flush = flush_seconds(options, prefix)
    own = {k: v for k, v in options.items() if k != "flush_seconds"}
    try:
        return classes[name](own, context), flush
    except BadRequest as exc:
        if not exc.message.startswith("capture."):
            raise BadRequest(f"{prefix}: {exc.message}") from None
        raise


def wait_all(runners: list[SinkRunner], timeout: float) -> bool:
    """Stop every runner within ``timeout`` seconds in all; True if each one finished."""
    deadline = time.monotonic() + timeout
    for runner in runners:
        runner._stop.set()
    finished = [runner.stop(max(0.0, deadline - time.monotonic())) for runner in runners]
    return all(finished)  # every runner waited for, even after one timed out

"""A worker in engine mode, seen from the front end: requests sent as they come, answered in
any order.

Its model is served by a generation engine (:mod:`tsf.runtime.engine_loop`), which computes
every request it holds at once.  :meth:`EngineWorker.submit` sends one request at once, however
many are running; the reader hands each PARTIAL and RESULT frame to the request its batch
number names, and STATS frames to :attr:`EngineWorker.on_stats`.  :meth:`EngineWorker.cancel`
asks the engine to stop a request (its client left): the engine frees its slot at the next
step and answers it ClientGone.

``response_timeout`` is a watchdog here: a worker holding requests that sends no frame at all
for that long (the engine reports its load every half second while it has work) is killed.  A
worker that dies fails the requests it held, and only those.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import BatchNotStarted, TsfError, WorkerDied, WorkerTimeout
from . import protocol
from .messages import Answer, Batch, BatchResult, Request
from .process import BatchDone, WorkerProcess, _call

log = logging.getLogger("tsf.worker")


class _Sequence:
    """A request sent to the engine and not answered yet."""

    __slots__ = ("on_done", "on_partial", "sent")

    def __init__(self, on_partial: Callable[[Answer], None] | None, on_done: BatchDone) -> None:
        self.on_partial = on_partial
        self.on_done = on_done
        self.sent = time.monotonic()


class EngineWorker(WorkerProcess):
    """A worker process whose engine takes requests continuously."""

    def __init__(self, worker_id: str, index: int, spec: dict, threads: int) -> None:
        super().__init__(worker_id, index, spec, threads)
        self._running: dict[int, _Sequence] = {}
        self.stats: dict = {}  # the engine's last STATS report
        self.on_stats: Callable[[EngineWorker, dict], None] | None = None
        self._watchdog = 0.0  # response_timeout of the requests it holds

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._running)

    def submit(self, request: Request, timeout: float, on_done: BatchDone,
               on_partial: Callable[[Answer], None] | None = None) -> int:
        """Send ``request`` now; ``on_partial`` gets its streamed answers and ``on_done`` its
        final one (or its error).  Returns its number, for :meth:`cancel`."""
        number = self._sent
        if self._writer is None:
            on_done(None, BatchNotStarted(f"worker {self.id} is gone; the request was not "
                                          "sent"), 0.0)
            return number
        header, blobs = Batch([request]).to_wire()
        header["number"] = number
        protocol.write_frame(self._writer, protocol.BATCH, header, blobs)
        self._sent += 1
        self._running[number] = _Sequence(on_partial, on_done)
        self._watchdog = timeout
        if len(self._running) == 1:
            self.status = "BUSY"
            self._restart_timer(timeout)
        return number

    def send_batch(self, batch: Batch, timeout: float, on_done: BatchDone,
                   on_partial: Callable[[Answer], None] | None = None) -> int:
        """A batch of one request is a request (engine workers take nothing else)."""
        if len(batch.requests) != 1:
            raise ValueError("an engine worker takes one request at a time")
        return self.submit(batch.requests[0], timeout, on_done, on_partial)

    def cancel(self, number: int, index: int = 0) -> bool:
        """Ask the engine to stop request ``number`` (its client left).  False: the request
        was running, so it counts as abandoned while running."""
        if self._writer is not None and number in self._running:
            protocol.write_frame(self._writer, protocol.CANCEL, {"batch": number, "index": 0})
        return False

    def _on_frame(self, kind: int, header: dict, blobs: list) -> None:
        """A frame from the engine: its stats, or a partial answer or the result of the request
        it names (requests are answered in any order)."""
        if self._running:
            self._restart_timer(self._watchdog)
        if kind == protocol.STATS:
            self.stats = header
            if self.on_stats is not None:
                self.on_stats(self, header)
            return
        number = header.get("batch")
        if kind == protocol.PARTIAL:
            sequence = self._running.get(number)  # type: ignore[arg-type]
            if sequence is not None and sequence.on_partial is not None:
                sequence.on_partial(Answer.from_wire(header, blobs))
            return
        if kind != protocol.RESULT:
            raise protocol.ProtocolError(f"unexpected frame kind {kind}")
        sequence = self._running.pop(number, None)  # type: ignore[arg-type]
        if not self._running:
            self._idle()
        if sequence is not None:
            _call(sequence.on_done, BatchResult.from_wire(header, blobs), None, sequence.sent)

    def _idle(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.status == "BUSY":
            self.status = "READY"

    def _fail_in_flight(self) -> None:
        """The worker is gone: every request it held fails."""
        self._idle()
        if not self._running:
            return
        if self._timed_out:
            error: TsfError = WorkerTimeout(
                f"worker {self.id} sent nothing for {self._watchdog:g} s (response_timeout) "
                "while generating; it was stopped and will be restarted")
        elif self.retiring and self.kill_reason:
            error = WorkerDied(f"worker {self.id} was stopped ({self.kill_reason}) while "
                               "generating")
        else:
            log.error("worker %s died (%s) holding %d request(s); last output:\n%s", self.id,
                      self.exit_description(), len(self._running), self.tail_text())
            error = WorkerDied(f"worker {self.id} died while generating "
                               f"({self.exit_description()}); it will be restarted")
        running, self._running = list(self._running.values()), {}
        for sequence in running:
            _call(sequence.on_done, None, error, sequence.sent)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["runningSequences"] = len(self._running)
        return described

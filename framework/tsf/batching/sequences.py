"""Stateful sequence batching (TorchServe's ``sequenceBatching``): the requests of one sequence go
in order to the same worker, one at a time, so its handler can keep the sequence's state.

A request names its sequence with the ``ts_request_sequence_id`` header (renamed by
``ts_header_key_sequence_id``); one without it starts a new sequence, whose id
(``ts-seq-<uuid>``) is passed on with ``ts_request_sequence_start: true``.  The id reaches the
handler under the header's lower-case name (``context.get_sequence_id(idx)``) and is echoed on
the answer, unless the handler set that header itself.

* At most ``maxNumSequence`` sequences are open per model version, each with at most
  ``maxSequenceJobQueueSize`` queued requests; past either, a request is refused 503.
* A sequence is pinned to a worker when its first request is sent (to the worker with the fewest
  sequences); its requests wait for that worker.  A batch holds at most one request per
  sequence, up to ``batch_size``, waiting at most ``max_batch_delay`` from its oldest request.
* A sequence with nothing queued or running for ``sequenceMaxIdleMSec``, or older than
  ``sequenceTimeoutMSec`` (when set), is closed and frees its slot; a later request with its id
  opens a new one.  A request whose ``ts_request_sequence_end`` header is ``true``, or an answer
  whose handler sets that header to the sequence's id (``;``-separated ids, as TorchServe's
  continuous example does), closes it once answered.
* If its worker dies, a sequence is pinned again to another worker (the handler's state for it
  is gone with the worker, as in TorchServe); requests of a batch the worker had not begun are
  queued again, the one it was computing fails.

The queue (``job_queue_size``) still bounds all the version's queued requests, and counts them
for metrics and autoscaling.  This batcher is used instead of :class:`~tsf.batching.batcher.
Batcher` for models with ``sequenceBatching: true``, so the normal path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import BatchNotStarted, ClientGone, ServiceUnavailable, TsfError
from ..workers.messages import Batch, BatchResult
from .batcher import BatchObserver, _expire, _fail, _partials_to
from .queue import BatchQueue, Job

log = logging.getLogger("tsf.batching")


@dataclass(frozen=True)
class SequenceSettings:
    """A model version's sequence settings and the header names."""

    max_sequences: int
    max_queued: int = 1            # per sequence
    max_idle_s: float = 0.0
    timeout_s: float = 0.0         # 0: no limit on a sequence's age
    id_header: str = "ts_request_sequence_id"
    start_header: str = "ts_request_sequence_start"
    end_header: str = "ts_request_sequence_end"


@dataclass(eq=False)
class Sequence:
    """One open sequence: its queued requests and where they run."""

    id: str
    created: float
    last_active: float
    jobs: collections.deque = field(default_factory=collections.deque)
    worker: Any = None        # the worker it is pinned to
    running: bool = False     # a request of it is at its worker
    ending: bool = False      # closed once its running request is answered


def _take_header(headers: dict[str, str], name: str) -> str | None:
    """Remove ``name`` from ``headers`` whatever its case; its (last) value."""
    value = None
    for key in [k for k in headers if k.lower() == name]:
        value = headers.pop(key)
    return value


class SequenceBatcher:
    """Moves the jobs of sequences to the workers of a pool (see the module's docstring)."""

    def __init__(self, queue: BatchQueue, pool: Any, *, batch_size: int,
                 max_batch_delay_ms: float, response_timeout: float,
                 settings: SequenceSettings, observer: BatchObserver | None = None,
                 stage_stamps: bool = False) -> None:
        self.queue = queue
        self.pool = pool
        self.batch_size = batch_size
        self.max_delay = max_batch_delay_ms / 1000.0
        self.response_timeout = response_timeout
        self.settings = settings
        self.observer = observer
        self.stage_stamps = stage_stamps
        self.sequences: dict[str, Sequence] = {}
        self._in_flight: dict[int, list[Job]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stop_error: TsfError | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.pool.on_idle = self.wake
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, error: TsfError, wait: float | None = None) -> None:
        """Fail queued jobs with ``error``; running batches get ``wait`` seconds (default
        ``response_timeout``)."""
        self._stop_error = error
        if self._task is not None:
            self._task.cancel()
        for sequence in self.sequences.values():
            for job in sequence.jobs:
                _fail(job, error)
        self.sequences.clear()
        self.queue.drain()
        deadline = time.monotonic() + (self.response_timeout if wait is None else wait)
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for batch in list(self._in_flight.values()):
            for job in batch:
                _fail(job, error)
        self._in_flight.clear()

    def wake(self) -> None:
        self._wakeup.set()

    # --- admission --------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue ``job`` in its sequence (opened if new); 503 when the model has no room."""
        s, headers, now = self.settings, job.request.headers, time.monotonic()
        sequence_id = _take_header(headers, s.id_header)
        started = _take_header(headers, s.start_header)
        ended = _take_header(headers, s.end_header)
        if not sequence_id:
            sequence_id, started = f"ts-seq-{uuid.uuid4()}", "true"
        headers[s.id_header] = sequence_id
        if started is not None:
            headers[s.start_header] = started
        if ended is not None:
            headers[s.end_header] = ended
        sequence = self.sequences.get(sequence_id)
        if sequence is not None and sequence.ending:
            raise ServiceUnavailable(f"sequence {sequence_id} has ended; start a new one")
        if sequence is None:
            if len(self.sequences) >= s.max_sequences:
                raise ServiceUnavailable(
                    f"the model has {s.max_sequences} open sequences (maxNumSequence); retry "
                    "when one ends or expires")
            sequence = Sequence(sequence_id, now, now)
        elif len(sequence.jobs) >= s.max_queued:
            raise ServiceUnavailable(f"sequence {sequence_id} already has {s.max_queued} "
                                     "queued requests (maxSequenceJobQueueSize)")
        self.queue.put(job)  # the version's bound (job_queue_size) and its metrics
        self.sequences[sequence_id] = sequence
        sequence.jobs.append(job)
        sequence.last_active = now
        if ended is not None and ended.strip().lower() == "true":
            sequence.ending = True
        job.expiry = asyncio.get_running_loop().call_later(
            self.response_timeout, _expire, job, f"{self.response_timeout:g} s (response_timeout)")
        job.future.add_done_callback(functools.partial(self._settled, sequence, job))
        self.wake()

    def _settled(self, sequence: Sequence, job: Job, future: asyncio.Future) -> None:
        """A job that left before it was sent (client gone, expired) leaves its sequence."""
        if job.dispatched:
            if not future.cancelled() and isinstance(future.exception(), ClientGone) \
                    and self.observer is not None:
                self.observer.abandoned("running")
            return
        if job in sequence.jobs:
            sequence.jobs.remove(job)
            self.queue.discard(job)
            if self.observer is not None and (future.cancelled() or
                                              isinstance(future.exception(), ClientGone)):
                self.observer.abandoned("queued")
        self.wake()

    # --- dispatch ---------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            timeout = self._expire_sequences(time.monotonic())
            delay = self._dispatch(time.monotonic())
            if delay is not None:
                timeout = delay if timeout is None else min(timeout, delay)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _free_workers(self) -> list[Any]:
        return [w for w in self.pool.workers.values()
                if w.alive and not w.held and not w.in_flight]

    def _dispatch(self, now: float) -> float | None:
        """Send every batch that may go now; seconds until a waiting one may (None: none)."""
        ready = sorted((q for q in self.sequences.values() if q.jobs and not q.running),
                       key=lambda q: q.jobs[0].arrival)
        if not ready:
            return None
        live = {w.id for w in self.pool.workers.values() if w.alive}
        for sequence in ready:
            if sequence.worker is not None and sequence.worker.id not in live:
                log.warning("sequence %s: its worker %s is gone; it continues on another "
                            "worker, without the state the handler kept", sequence.id,
                            sequence.worker.id)
                sequence.worker = None
        free = self._free_workers()
        pinned = collections.Counter(q.worker.id for q in self.sequences.values()
                                     if q.worker is not None)
        for sequence in ready:
            if sequence.worker is None and free:
                sequence.worker = min(free, key=lambda w: pinned[w.id])
                pinned[sequence.worker.id] += 1
        wait: float | None = None
        for worker in free:
            mine = [q for q in ready if q.worker is worker][:self.batch_size]
            if not mine:
                continue
            deadline = mine[0].jobs[0].arrival + self.max_delay
            if len(mine) < self.batch_size and deadline > now:
                wait = deadline - now if wait is None else min(wait, deadline - now)
                continue
            self._send(worker, mine)
        return wait

    def _send(self, worker: Any, sequences: list[Sequence]) -> None:
        batch: list[Job] = []
        for sequence in sequences:
            job = sequence.jobs.popleft()
            self.queue.discard(job)
            if job.future.done():
                continue
            if job.expiry is not None:
                job.expiry.cancel()
            job.dispatched = time.monotonic()
            sequence.running = True
            batch.append(job)
        if not batch:
            return
        key = id(batch)
        self._in_flight[key] = batch
        self.pool.hold(worker)
        try:
            worker.send_batch(Batch([job.request for job in batch], self.stage_stamps),
                              self.response_timeout,
                              functools.partial(self._answered, worker, batch, key),
                              _partials_to(batch))
        except Exception as exc:  # a batch that cannot be sent fails alone
            log.exception("sending a batch to worker %s failed", worker.id)
            self._answered(worker, batch, key, None, TsfError(
                f"the batch could not be sent to the worker ({type(exc).__name__})"), 0.0)
        finally:
            self.pool.release(worker)

    def _answered(self, worker: Any, batch: list[Job], key: int, result: BatchResult | None,
                  error: TsfError | None, started: float) -> None:
        if self._in_flight.pop(key, None) is None:
            return
        now = time.monotonic()
        answers = result.answers if result is not None and error is None else None
        for index, job in enumerate(batch):
            sequence = self.sequences.get(job.request.headers.get(self.settings.id_header, ""))
            if sequence is not None:
                sequence.running = False
                sequence.last_active = now
            if isinstance(error, BatchNotStarted) and self._stop_error is None \
                    and sequence is not None and not job.future.done():
                job.dispatched = 0.0  # sent to a worker that died first: queued again
                sequence.jobs.appendleft(job)
                self.queue.requeue([job])
                continue
            if answers is None:
                _fail(job, self._stop_error or error or ServiceUnavailable(
                    "the worker sent no answer"))
                continue
            answer = answers[index]
            answer.headers.setdefault(self.settings.id_header, job.request.headers.get(
                self.settings.id_header, ""))
            self._close_ended(answer.headers.get(self.settings.end_header), sequence)
            if not job.future.done():
                job.future.set_result(answer)
        if result is not None and error is None and self.observer is not None:
            self.observer.batch_done(batch, result, started, now, worker.id)
        self.pool.batch_finished(worker, error is None)
        self.wake()

    def _close_ended(self, ended: str | None, sequence: Sequence | None) -> None:
        """Close the sequences the handler ended, and ``sequence`` if its client did."""
        ids = [i.strip() for i in (ended or "").split(";") if i.strip()]
        for sequence_id in ids:
            found = self.sequences.get(sequence_id)
            if found is not None:
                found.ending = True
        for candidate in [self.sequences.get(i) for i in ids] + [sequence]:
            if candidate is not None and candidate.ending and not candidate.running:
                self._close(candidate, "ended")

    def _close(self, sequence: Sequence, why: str) -> None:
        if self.sequences.get(sequence.id) is not sequence:
            return
        del self.sequences[sequence.id]
        for job in sequence.jobs:
            self.queue.discard(job)
            _fail(job, ServiceUnavailable(f"sequence {sequence.id} {why} before this request "
                                          "was run"))
        log.debug("sequence %s %s", sequence.id, why)

    def _expire_sequences(self, now: float) -> float | None:
        """Close idle and timed-out sequences; seconds until the next may expire."""
        s, soonest = self.settings, None
        for sequence in list(self.sequences.values()):
            if sequence.running or sequence.jobs:
                continue
            if sequence.ending:
                self._close(sequence, "ended")
                continue
            deadline = sequence.last_active + s.max_idle_s
            if s.timeout_s:
                deadline = min(deadline, sequence.created + s.timeout_s)
            if deadline <= now:
                self._close(sequence, "expired")
            else:
                soonest = deadline - now if soonest is None else min(soonest, deadline - now)
        return soonest

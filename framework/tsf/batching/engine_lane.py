"""The queue of a model served by a generation engine: requests go to a worker one by one, as
soon as it has room, never batch by batch.

An engine worker computes up to ``max_sequences`` requests at once and takes new ones between
its steps (continuous batching: :mod:`tsf.runtime.engine_loop`).  This lane sends each queued
request to the live worker with the fewest running, while one has fewer than
``max_sequences``; the rest wait in the version's bounded queue, in order.

* A full queue refuses at once: 503 with ``Retry-After``.
* A request still queued after ``response_timeout`` (or ``clientTimeoutInMills``) fails with
  503.
* A request whose client leaves is dropped from the queue, or, once sent, cancelled in its
  worker: the engine stops it at its next step and frees its slot.
* A worker that dies fails only the requests it held.
* Stored jobs (:mod:`tsf.jobs`) wait in a lane of their own and take a slot only when no online
  request waits, and at most ``job_share`` of the slots while online requests run.

Used instead of :class:`~tsf.batching.batcher.Batcher` for engine models, so the normal batch
path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from typing import Any, Protocol

from ..errors import ClientGone, ServiceUnavailable, TsfError
from ..workers.messages import Answer, BatchResult
from ..workers.pool import WorkerPool
from .background import BackgroundJob
from .batcher import _expire, _fail
from .queue import BatchQueue, Job

log = logging.getLogger("tsf.batching")

RETRY_AFTER_SECONDS = 1


class LaneObserver(Protocol):
    """What an engine lane reports (see :class:`tsf.serving.generation_observer.
    GenerationObserver`)."""

    def answered(self, job: Job, answer: Answer, worker_id: str) -> None:
        """A worker answered ``job`` (its usage and timing are in the answer's body)."""

    def abandoned(self, stage: str) -> None:
        """A job's client left while it was ``"queued"`` or ``"running"``."""

    def load(self, running: int, waiting: int) -> None:
        """Requests sent to workers and not answered, and requests queued, now."""

    def engine_stats(self, worker: Any, stats: dict) -> None:
        """A worker's engine reported its load (``EngineStats.to_wire``)."""


class EngineLane:
    """Moves jobs from a queue to engine workers, one by one, while they have room."""

    def __init__(self, queue: BatchQueue, pool: WorkerPool, *, max_sequences: int,
                 response_timeout: float, observer: LaneObserver | None = None,
                 client_timeout_ms: int = 0) -> None:
        self.queue = queue
        self.pool = pool
        self.max_sequences = max(1, max_sequences)
        self.response_timeout = response_timeout
        self.observer = observer
        self.client_timeout_ms = client_timeout_ms
        self.running = 0  # sent to workers, not answered
        self._task: asyncio.Task | None = None
        self._stop_error: TsfError | None = None
        self._in_flight: set[Job] = set()
        self._background: collections.deque[BackgroundJob] = collections.deque()
        self._background_running = 0
        self.share = 1.0  # job_share

    def start(self) -> None:
        self.pool.on_idle = self.queue.wake
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, error: TsfError, wait: float | None = None) -> None:
        """Fail queued jobs with ``error``; give running ones ``wait`` seconds (default:
        ``response_timeout``) to finish, then fail them too."""
        self._stop_error = error
        if self._task is not None:
            self._task.cancel()
        for job in self.queue.drain() + list(self._background):
            _fail(job, error)
        self._background.clear()
        deadline = time.monotonic() + (self.response_timeout if wait is None else wait)
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for job in list(self._in_flight):
            _fail(job, error)
        self._in_flight.clear()
        self._report()

    def submit(self, job: Job) -> None:
        """Send ``job`` to a worker with room at once, else queue it (full: 503)."""
        job.future.add_done_callback(functools.partial(self._settled, job))
        if not len(self.queue):
            workers = self._room()
            if workers:
                self._send(workers[0], job)
                self._report()
                return
        if len(self.queue) >= self.queue.maxsize:
            error = ServiceUnavailable(
                f"the model is generating for {self.running} request(s) and {len(self.queue)} "
                f"more are queued (job_queue_size {self.queue.maxsize}); retry later")
            error.headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            raise error
        self.queue.put(job)
        loop = asyncio.get_running_loop()
        client = self.client_timeout_ms / 1000.0
        if client and client < self.response_timeout:
            job.expiry = loop.call_later(client, _expire, job, f"{self.client_timeout_ms} ms "
                                         "(clientTimeoutInMills); the request was dropped")
        else:
            job.expiry = loop.call_later(self.response_timeout, _expire, job,
                                         f"{self.response_timeout:g} s (response_timeout)")
        self._report()

    def submit_background(self, job: BackgroundJob, share: float) -> None:
        """Queue a stored job's request behind the online ones (``share``: ``job_share``)."""
        if self._stop_error is not None:
            raise self._stop_error
        self.share = share
        self._background.append(job)
        job.future.add_done_callback(functools.partial(self._settled, job))
        self.queue.wake()

    def _background_room(self, workers: list[Any]) -> bool:
        """Whether a stored job may take a slot now: none while online requests wait, at most
        ``job_share`` of the slots while online requests run."""
        if len(self.queue) or not workers:
            return False
        slots = self.max_sequences * sum(1 for w in self.pool.workers.values() if w.alive)
        online = self.running - self._background_running
        return not online or self._background_running < max(1, int(self.share * slots))

    def _settled(self, job: Job, future: asyncio.Future) -> None:
        """A client that left: drop its queued job, or cancel it in its worker."""
        if not future.cancelled() and not isinstance(future.exception(), ClientGone):
            return
        if job.expiry is not None:
            job.expiry.cancel()
        if not job.dispatched:
            if isinstance(job, BackgroundJob):
                if job in self._background:
                    self._background.remove(job)
            else:
                self.queue.discard(job)
            self._report()
        else:
            job.cancel_at_worker()
        if self.observer is not None:
            self.observer.abandoned("running" if job.dispatched else "queued")

    def _room(self) -> list[Any]:
        """Live workers with room, fewest running first."""
        workers = [w for w in self.pool.workers.values()
                   if w.alive and w.in_flight < self.max_sequences]
        workers.sort(key=lambda w: w.in_flight)
        return workers

    async def _run(self) -> None:
        queue = self.queue
        while True:
            workers = self._room()
            if workers and len(queue):
                free = sum(self.max_sequences - w.in_flight for w in workers)
                for job in await queue.fill(free, 0.0):
                    self._send(min(workers, key=lambda w: w.in_flight), job)
            elif self._background and self._background_room(workers):
                job = self._background.popleft()
                if not job.future.done():
                    self._send(workers[0], job)
            else:
                await queue.changed()  # a request came or finished, or a worker started
            self._report()

    def _send(self, worker: Any, job: Job) -> None:
        if worker.on_stats is None and self.observer is not None:
            worker.on_stats = self.observer.engine_stats
        job.dispatched = time.monotonic()
        if job.expiry is not None:
            job.expiry.cancel()
        if isinstance(job, BackgroundJob):
            self._background_running += 1
            if job.on_start is not None:
                job.on_start()
        self.running += 1
        self._in_flight.add(job)
        try:
            number = worker.submit(job.request, self.response_timeout,
                                   functools.partial(self._answered, worker, job),
                                   functools.partial(_deliver, job))
        except Exception as exc:  # a request that cannot be sent fails alone
            log.exception("sending a request to worker %s failed", worker.id)
            self._answered(worker, job, None, TsfError(
                f"the request could not be sent to the worker ({type(exc).__name__})"), 0.0)
            return
        if job in self._in_flight:
            job.sent_to = (worker, number, 0)

    def _answered(self, worker: Any, job: Job, result: BatchResult | None,
                  error: TsfError | None, started: float) -> None:
        if job not in self._in_flight:
            return
        self._in_flight.discard(job)
        self.running -= 1
        if isinstance(job, BackgroundJob):
            self._background_running -= 1
        job.sent_to = None
        try:
            if error is not None or result is None or not result.answers:
                _fail(job, error or ServiceUnavailable("the worker sent no answer"))
            else:
                answer = result.answers[0]
                if not job.future.done():
                    job.future.set_result(answer)
                if self.observer is not None:
                    self.observer.answered(job, answer, worker.id)
        finally:
            self.pool.batch_finished(worker, error is None)
            self._report()
            self.queue.wake()

    def _report(self) -> None:
        if self.observer is not None:
            self.observer.load(self.running, len(self.queue) + len(self._background))


def _deliver(job: Job, answer: Answer) -> None:
    """Hand a streamed answer to its job while the job still waits."""
    if job.on_partial is not None and not job.future.done():
        try:
            job.on_partial(answer)
        except Exception:  # one client's stream must not break the worker's others
            log.exception("could not pass a streamed answer to its request")

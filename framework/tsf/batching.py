"""Per-model-version request queue and batch assembly.

* The queue is bounded (``job_queue_size``): a full queue refuses at once with 503.
* A batch holds up to ``batch_size`` jobs and waits at most ``max_batch_delay`` counted from the
  arrival of its *first* job, not from when a worker became free: a job that already waited
  behind a busy worker is sent as soon as a worker is idle.
* The dispatcher takes an idle worker first, then assembles the batch, so a batch never waits
  for a worker while more jobs could have joined it.
* A job still queued after ``response_timeout`` (or the model's ``clientTimeoutInMills``, when
  shorter) fails with 503, so no request waits forever.
* With ``useJobTicket`` a job that no worker is free to take (an idle worker, or room in the
  batch a worker is waiting to fill) is refused at once with 503 instead of queueing.
* A job whose client went away (HTTP disconnect, gRPC cancel) leaves the queue at once, so the
  queue limit counts live requests only; if it was already in a batch, its answer is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from typing import Any, Callable, Protocol

from .errors import ClientGone, ServiceUnavailable, TsfError
from .traffic import ROUTING_HEADER, header_value
from .workers.messages import Answer, Batch, BatchResult, Request
from .workers.pool import WorkerPool

log = logging.getLogger("tsf.batching")


# The event loop sleeps in whole milliseconds, rounded up (epoll, libuv), so a timer set for the
# deadline fires up to 1 ms past it.  Aiming this much early keeps a batch within its delay.
TIMER_SLACK = 0.001


class Job:
    """One request waiting for its answer: the message a worker gets, and the front end's
    bookkeeping of it, which is never sent."""

    __slots__ = ("request", "future", "arrival", "dispatched", "expiry", "trace",
                 "on_partial", "label_version")

    def __init__(self, request: Request, future: asyncio.Future, trace: Any = None,
                 label_version: str = "default") -> None:
        self.request = request
        self.future = future  # resolves to the worker's Answer
        self.trace = trace  # the request's tracing span, when tracing is on
        self.label_version = label_version  # the version the client named, for metrics
        self.arrival = time.monotonic()
        self.dispatched = 0.0
        self.expiry: asyncio.TimerHandle | None = None
        # called with each intermediate answer a streaming handler sends
        self.on_partial: Callable[[Answer], None] | None = None

    @property
    def routing_key(self) -> str | None:
        """The request's routing header (a traffic split's sticky key), if it has one."""
        return header_value(self.request.headers, ROUTING_HEADER)

    def abandon(self, reason: str = "the client closed the connection before the answer was "
                "ready") -> None:
        """The client is gone: fail the job (the batcher then drops it or its answer)."""
        if not self.future.done():
            self.future.set_exception(ClientGone(reason))


class BatchQueue:
    """A bounded FIFO of jobs that hands out batches."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[Job] = collections.deque()
        self._waiter: asyncio.Future | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, job: Job) -> None:
        if len(self._items) >= self.maxsize:
            raise ServiceUnavailable(
                f"the model's job queue is full ({self.maxsize} requests, job_queue_size); "
                "retry later")
        self._items.append(job)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def oldest_wait(self, now: float) -> float:
        """Seconds the oldest queued job has waited (0 when the queue is empty)."""
        return now - self._items[0].arrival if self._items else 0.0

    def discard(self, job: Job) -> None:
        try:
            self._items.remove(job)
        except ValueError:
            pass

    def drain(self) -> list[Job]:
        items = list(self._items)
        self._items.clear()
        return items

    async def _wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        handle = loop.call_later(timeout, _settle, self._waiter) if timeout is not None else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def _prune(self) -> None:
        while self._items and self._items[0].future.done():
            self._items.popleft()

    async def next_batch(self, batch_size: int, max_delay: float) -> list[Job]:
        """Wait for a first job, then for more until full or its delay has passed."""
        self._prune()
        while not self._items:
            await self._wait(None)
            self._prune()
        deadline = self._items[0].arrival + max_delay
        while len(self._items) < batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= TIMER_SLACK:
                break
            await self._wait(remaining - TIMER_SLACK)
        batch: list[Job] = []
        while self._items and len(batch) < batch_size:
            job = self._items.popleft()
            if not job.future.done():
                batch.append(job)
        return batch


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class BatchObserver(Protocol):
    """What a batcher reports as it works (see :class:`tsf.observer.VersionObserver`)."""

    def batch_done(self, batch: list[Job], result: BatchResult, dispatched: float,
                   finished: float, worker_id: str) -> None:
        """A worker answered ``batch`` with ``result``; times from ``time.monotonic()``."""

    def abandoned(self, stage: str) -> None:
        """A job's client went away while it was ``"queued"`` (dropped before any worker saw
        it) or ``"running"`` (its answer is dropped)."""


class Batcher:
    """Moves jobs from a queue to the idle workers of a pool, in batches."""

    def __init__(self, queue: BatchQueue, pool: WorkerPool, *, batch_size: int,
                 max_batch_delay_ms: float, response_timeout: float,
                 observer: BatchObserver | None = None, stage_stamps: bool = False,
                 client_timeout_ms: int = 0, job_ticket: bool = False) -> None:
        self.queue = queue
        self.pool = pool
        self.batch_size = batch_size
        self.max_delay = max_batch_delay_ms / 1000.0
        self.response_timeout = response_timeout
        self.observer = observer
        self.stage_stamps = stage_stamps  # ask workers for wall-clock stage times (tracing)
        self.client_timeout_ms = client_timeout_ms
        self.job_ticket = job_ticket
        self._holding = False  # a worker is acquired and waits for its batch to fill
        self._task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self._stop_error: TsfError = ServiceUnavailable("the model is being removed")

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, error: TsfError, wait: float | None = None) -> None:
        """Fail queued jobs with ``error``; give running batches ``wait`` seconds (default:
        ``response_timeout``) to finish, then fail their jobs with ``error`` too."""
        self._stop_error = error
        if self._task is not None:
            self._task.cancel()
        for job in self.queue.drain():
            _fail(job, error)
        if self._inflight:
            await asyncio.wait(self._inflight,
                               timeout=self.response_timeout if wait is None else max(wait, 0.01))
        for task in list(self._inflight):
            task.cancel()

    def submit(self, job: Job) -> None:
        if self.job_ticket and not self._room_now():
            raise ServiceUnavailable("no worker is free to take this request and the model uses "
                                     "useJobTicket (refuse rather than queue); retry later")
        self.queue.put(job)
        loop = asyncio.get_running_loop()
        client = self.client_timeout_ms / 1000.0
        if client and client < self.response_timeout:
            why = f"{self.client_timeout_ms} ms (clientTimeoutInMills); the request was dropped"
            job.expiry = loop.call_later(client, _expire, job, why)
        else:
            job.expiry = loop.call_later(self.response_timeout, _expire, job,
                                         f"{self.response_timeout:g} s (response_timeout)")
        job.future.add_done_callback(functools.partial(self._settled, job))

    def _room_now(self) -> bool:
        """Whether a worker could take one more job without it waiting for a busy one."""
        room = self.pool.idle_count * self.batch_size + (self.batch_size if self._holding else 0)
        return len(self.queue) < room

    def _settled(self, job: Job, future: asyncio.Future) -> None:
        """Drop a job whose client went away (cancelled, or failed with ClientGone)."""
        if not future.cancelled() and not isinstance(future.exception(), ClientGone):
            return
        if job.expiry is not None:
            job.expiry.cancel()
        if not job.dispatched:
            self.queue.discard(job)
        if self.observer is not None:
            self.observer.abandoned("running" if job.dispatched else "queued")

    async def _run(self) -> None:
        while True:
            worker = await self.pool.acquire()
            self._holding = True
            try:
                batch = await self.queue.next_batch(self.batch_size, self.max_delay)
            finally:
                self._holding = False
            while not worker.alive:
                worker = await self.pool.acquire()
            batch = [job for job in batch if not job.future.done()]
            if not batch:
                self.pool.release(worker)
                continue
            task = asyncio.ensure_future(self._dispatch(worker, batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _dispatch(self, worker: Any, batch: list[Job]) -> None:
        now = time.monotonic()
        for job in batch:
            if job.expiry is not None:
                job.expiry.cancel()
            job.dispatched = now
        succeeded = False
        try:
            result = await worker.run_batch(Batch([job.request for job in batch],
                                                  self.stage_stamps),
                                            self.response_timeout, _partials_to(batch))
            succeeded = True
        except TsfError as error:
            for job in batch:
                _fail(job, error)
            return
        except asyncio.CancelledError:
            for job in batch:
                _fail(job, self._stop_error)
            raise
        finally:
            self.pool.release(worker, succeeded)
        for job, answer in zip(batch, result.answers):
            if not job.future.done():
                job.future.set_result(answer)
        if self.observer is not None:
            self.observer.batch_done(batch, result, now, time.monotonic(), worker.id)


def _partials_to(batch: list[Job]) -> Callable[[Answer], None]:
    """Hands each intermediate answer to the job it belongs to, while that job still waits."""

    def deliver(answer: Answer) -> None:
        index = -1 if answer.index is None else answer.index
        if not 0 <= index < len(batch):
            return
        job = batch[index]
        if job.on_partial is not None and not job.future.done():
            try:
                job.on_partial(answer)
            except Exception:  # one client's stream must not break the worker's batch
                log.exception("could not pass an intermediate answer to its request")

    return deliver


def _fail(job: Job, error: TsfError) -> None:
    if job.expiry is not None:
        job.expiry.cancel()
    if not job.future.done():
        job.future.set_exception(error)


def _expire(job: Job, within: str) -> None:
    if not job.dispatched and not job.future.done():
        job.future.set_exception(ServiceUnavailable(
            f"no worker became free for this request within {within}; the model may be "
            "overloaded or restarting"))

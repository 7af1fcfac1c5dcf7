"""A model version's bounded queue of jobs, and the job: one request waiting for its answer.

The queue hands out batches (:meth:`BatchQueue.fill`): up to ``batch_size`` jobs, waiting at
most ``max_batch_delay`` from the first job's arrival; a job whose client left is dropped.  The
:class:`~tsf.batching.batcher.Batcher` decides when to fill one and which worker takes it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Callable

from ..errors import ClientGone, ServiceUnavailable
from ..workers.messages import Answer, Request

# The event loop sleeps in whole milliseconds, rounded up (epoll, libuv), so a timer set for the
# deadline fires up to 1 ms past it.  Aiming this much early keeps a batch within its delay.
TIMER_SLACK = 0.001


class Job:
    """One request waiting for its answer: the message a worker gets, and the front end's
    bookkeeping of it, which is never sent."""

    __slots__ = ("request", "future", "arrival", "dispatched", "expiry", "trace",
                 "on_partial", "label_version", "sent_to", "expired")

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
        self.sent_to: tuple[Any, int, int] | None = None  # (worker, batch number, index)
        self.expired = ""  # why it timed out waiting behind a worker's batch, if it did

    def cancel_at_worker(self) -> bool:
        """Ask the worker this job's batch waits at to skip it; True if that batch had not
        begun (as far as the front end knows), so the job is not run."""
        if self.sent_to is None:
            return False
        worker, number, index = self.sent_to
        self.sent_to = None
        return worker.cancel(number, index)

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
        self.wake()

    def oldest_wait(self, now: float) -> float:
        """Seconds the oldest queued job has waited (0 when the queue is empty)."""
        return now - self._items[0].arrival if self._items else 0.0

    def discard(self, job: Job) -> None:
        try:
            self._items.remove(job)
        except ValueError:
            pass

    def requeue(self, jobs: list[Job]) -> None:
        """Put ``jobs`` back at the front, in their order (they were already admitted)."""
        self._items.extendleft(reversed(jobs))
        self.wake()

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

    def wake(self) -> None:
        """Wake whoever waits on the queue (a job came, or a worker answered a batch)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def changed(self) -> None:
        """Wait until a job is queued or :meth:`wake` is called."""
        await self._wait(None)

    async def first_job(self) -> None:
        """Wait until a job is queued."""
        self._prune()
        while not self._items:
            await self._wait(None)
            self._prune()

    async def fill(self, batch_size: int, max_delay: float) -> list[Job]:
        """The queued jobs, waiting for more until full or the first one's delay has passed;
        empty at once if every job has left the queue."""
        self._prune()
        if not self._items:
            return []
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

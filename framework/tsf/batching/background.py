"""Background priority in a model version's batching: the requests of stored jobs
(:mod:`tsf.jobs`) use the same workers as online requests, but only the capacity those leave.

* A version's background lane is made when its first job arrives, so a server that takes no
  jobs runs exactly the online path.
* A background batch goes out only when no online request waits in the version's queue, and
  only to an idle worker (never behind another batch in a busy worker's socket).
* While online traffic flows (an online batch was sent in the last ``ONLINE_QUIET`` seconds,
  or one is at a worker), jobs hold at most ``job_share`` of the live workers, rounded down:
  with the default 0 they wait for a lull.  Once the version has been quiet that long, jobs may
  use every idle worker.  Jobs cost the front end CPU too (the store, their answers), which
  online requests would lack; so online traffic gets the workers and the front end, not just
  the first place in the queue.  An online request that arrives during a lull waits for at
  most one background batch: the online batcher sends its batch behind it, to the worker that
  finishes first.
* Batches are never mixed: an online request never waits for a larger batch made of jobs.
* A background job has no queue timeout (the job store keeps it as long as ``job_ttl``) and
  leaves the lane at once when it is cancelled.  If a worker dies before beginning its batch,
  its jobs go back to the front of the lane.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ClientGone, TsfError
from .queue import Job

if TYPE_CHECKING:
    from .batcher import Batcher

# while online requests wait, the lane looks again this often (a worker may be left idle)
ONLINE_POLL = 0.005
# seconds without an online batch after which jobs may use every worker
ONLINE_QUIET = 0.1


class BackgroundJob(Job):
    """A job queued at background priority: the request of a stored job.  ``on_start`` is
    called when it is sent to a worker."""

    __slots__ = ("on_start",)

    def __init__(self, *args: Any, on_start: Callable[[], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_start = on_start


class BackgroundLane:
    """One version's background jobs, and the task that hands them to idle workers."""

    def __init__(self, batcher: Batcher, share: float) -> None:
        self.batcher = batcher
        self.queue = batcher.queue
        self.pool = batcher.pool
        self.share = share
        self._items: collections.deque[BackgroundJob] = collections.deque()
        self._running: dict[str, set[Job]] = {}  # worker id -> its jobs not answered
        self._wakeup: asyncio.Future | None = None
        online_idle = self.pool.on_idle

        def on_idle() -> None:
            online_idle()
            self.wake()

        self.pool.on_idle = on_idle
        self._task = asyncio.ensure_future(self._run())

    def __len__(self) -> int:
        return len(self._items)

    @property
    def busy_workers(self) -> int:
        """Workers computing a background batch."""
        return len(self._running)

    def limit(self) -> int:
        """How many workers may compute background batches now: ``job_share`` of the live
        ones while online requests are at the workers, else all of them."""
        live = self.pool.live_count
        return int(self.share * live) if self._online_traffic() else live

    def _quiet_in(self) -> float:
        """Seconds until the version counts as quiet (0: it is)."""
        return max(0.0, self.batcher.online_sent + ONLINE_QUIET - time.monotonic())

    def _online_traffic(self) -> bool:
        """Whether online requests flow: one sent lately, or one at a worker."""
        if self._quiet_in() > 0:
            return True
        background = sum(len(jobs) for jobs in self._running.values())
        return sum(len(batch) for batch in self.batcher.in_flight()) > background

    def submit(self, job: BackgroundJob) -> None:
        self._items.append(job)
        job.future.add_done_callback(functools.partial(self._settled, job))
        self.wake()

    def take_back(self, jobs: list[Job]) -> list[Job]:
        """Put the background jobs among ``jobs`` (a batch no worker began) back at the front of
        the lane; the others are returned, for the online queue."""
        mine = [job for job in jobs if isinstance(job, BackgroundJob)]
        for job in reversed(mine):
            job.dispatched = 0.0
            for worker_id in list(self._running):
                self._left(worker_id, job)
            self._items.appendleft(job)
        if mine:
            self.wake()
        return [job for job in jobs if not isinstance(job, BackgroundJob)]

    def stop(self, error: TsfError) -> None:
        """Fail every job still in the lane with ``error``; take no more."""
        self._task.cancel()
        while self._items:
            job = self._items.popleft()
            if not job.future.done():
                job.future.set_exception(error)

    def wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _settled(self, job: BackgroundJob, future: asyncio.Future) -> None:
        """A cancelled job leaves the lane (its answer is dropped if a worker has it)."""
        if job.dispatched or not (future.cancelled() or
                                  isinstance(future.exception(), ClientGone)):
            return
        try:
            self._items.remove(job)
        except ValueError:
            pass

    def _may_send(self) -> bool:
        return bool(self._items) and not self.queue and self.pool.idle_count > 0 \
            and len(self._running) < self.limit()

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        handle = None
        quiet_in = self._quiet_in()
        if self._items and self.queue:
            handle = loop.call_later(ONLINE_POLL, self.wake)
        elif self._items and self.pool.idle_count and (quiet_in > 0 or self._may_send()):
            # jobs may go once quiet; or now, if the quiet time ended since the caller looked
            # (no other event would wake the lane then)
            handle = loop.call_later(quiet_in, self.wake)
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if handle is not None:
                handle.cancel()

    async def _run(self) -> None:
        while True:
            while not self._may_send():
                await self._wait()
            worker = self.pool.take_idle()
            if worker is None:
                continue
            batch: list[Job] = []
            while self._items and len(batch) < self.batcher.batch_size:
                job = self._items.popleft()
                if not job.future.done():
                    batch.append(job)
            try:
                if batch:
                    self._send(worker, batch)
            finally:
                self.pool.release(worker)

    def _send(self, worker: object, batch: list[Job]) -> None:
        now = time.monotonic()
        for job in batch:
            # the online queue's wait (metrics, autoscaler) starts here: the time a job spent
            # in the lane is the job store's backlog, reported by tsf.jobs
            job.arrival = now
        key = getattr(worker, "id")
        self._running.setdefault(key, set()).update(batch)
        for job in batch:
            job.future.add_done_callback(functools.partial(self._answered, key, job))
        self.batcher.send_batch(worker, batch)
        for job in batch:
            if job.on_start is not None and not job.future.done():  # type: ignore[attr-defined]
                job.on_start()  # type: ignore[attr-defined]

    def _answered(self, worker_id: str, job: Job, _: asyncio.Future) -> None:
        self._left(worker_id, job)

    def _left(self, worker_id: str, job: Job) -> None:
        """``job`` is no longer at ``worker_id``: answered, dropped, or back in the lane."""
        jobs = self._running.get(worker_id)
        if jobs is None or job not in jobs:
            return
        jobs.discard(job)
        if not jobs:
            del self._running[worker_id]
            self.wake()

"""The worker processes of one model version: start, scale, hand out, supervise, restart.

A worker that exits unexpectedly is replaced after a backoff that doubles with each consecutive
failure (capped by ``worker_restart_backoff_max``) and resets once a worker answers a batch.
Each exit is logged with its cause (exit code or signal, and the reason when the front end
killed it).  A pool that is closing, or whose server is draining or stopping, restarts nothing
(workers do not die of SIGTERM: see :mod:`tsf.runtime.main`).  A worker that crashes while
loading the model (a signal tsf did not send) when the pool scales is started once more before
the scaling fails: such crashes need not happen twice.  With a memory limit, a worker whose resident
memory is over it after a batch is stopped and replaced.

Handing out: the batcher acquires a worker, fills a batch for it, sends it and releases it.  An
idle worker (no batch in flight) goes first; a busy one is handed out again while it has fewer
than ``pipeline_depth`` batches in flight, so the next batch already waits in its socket when it
finishes the current one.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import time
from typing import Awaitable, Callable

from ..errors import ModelLoadError, WorkerCrashed
from .process import WorkerProcess

log = logging.getLogger("tsf.pool")

_worker_ids = itertools.count(9000)


class WorkerPool:
    """Workers of one model version and the set of those idle."""

    def __init__(self, spec: dict, *, startup_timeout: float, threads_per_worker: int = 0,
                 backoff_max: float = 30.0, memory_limit: int = 0,
                 stall_seconds: float = float("inf"), max_retry_seconds: float = 0,
                 pipeline_depth: int = 1) -> None:
        self.spec = spec
        self.pipeline_depth = max(1, pipeline_depth)  # batches in flight per worker, at most
        self.startup_timeout = startup_timeout
        self.threads_per_worker = threads_per_worker
        self.backoff_max = backoff_max
        self.memory_limit = memory_limit  # bytes of resident memory per worker; 0: no limit
        self.stall_seconds = stall_seconds  # busy longer on one batch: not serving (health)
        self.max_retry_seconds = max_retry_seconds  # maxRetryTimeoutInSec; 0: no limit
        self.gave_up = False  # restarts stopped after max_retry_seconds of failures
        self._failing_since: float | None = None
        self.on_change: Callable[[], None] = lambda: None  # the manager's metrics update
        self.on_memory_restart: Callable[[], None] = lambda: None
        self.on_idle: Callable[[], None] = lambda: None  # a worker became idle (the batcher's)
        self.worker_class = WorkerProcess  # EngineWorker for a model served by an engine
        self.target = 0
        self.workers: dict[str, WorkerProcess] = {}
        self.restarts = 0
        self.memory_restarts = 0
        self._idle: collections.deque[WorkerProcess] = collections.deque()
        self._open: collections.deque[WorkerProcess] = collections.deque()  # busy, with room
        self._recycling: dict[str, str] = {}  # worker id -> why it is replaced after its batches
        self._retired: set[str] = set()  # ids of retiring workers already being stopped
        self._idle_since: dict[str, float] = {}  # worker id -> when it last became idle
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._failures = 0
        self._pending_starts = 0
        self._closed = False
        self._tasks: set[asyncio.Task] = set()

    # --- counts -----------------------------------------------------------------------------
    @property
    def live_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.alive)

    @property
    def serving_count(self) -> int:
        """Live workers that are idle or busy on a batch for less than ``stall_seconds``."""
        return sum(1 for w in self.workers.values()
                   if w.alive and w.busy_for() < self.stall_seconds)

    def longest_idle(self, now: float) -> float:
        """Seconds the longest-idle live worker has been idle (0 when none is idle)."""
        return max((now - self._idle_since.get(w.id, now) for w in self._idle if w.alive),
                   default=0.0)

    @property
    def idle_count(self) -> int:
        return sum(1 for w in self._idle if w.alive)

    @property
    def starting_count(self) -> int:
        return self._pending_starts

    @property
    def closing(self) -> bool:
        return self._closed

    def stop_restarting(self) -> None:
        """Start and restart nothing from now on (the server is draining or stopping)."""
        self._closed = True

    def _threads(self) -> int:
        if self.threads_per_worker > 0:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // max(1, self.target))

    # --- lifecycle --------------------------------------------------------------------------
    async def _start_one(self) -> WorkerProcess:
        index = len(self.workers) + self._pending_starts
        worker = self.worker_class(str(next(_worker_ids)), index, self.spec, self._threads())
        self._pending_starts += 1
        try:
            await worker.start(self.startup_timeout)
        except BaseException:
            worker.kill("its start failed")
            raise
        finally:
            self._pending_starts -= 1
        if self._closed or self.live_count >= self.target:
            await worker.stop("not needed any more once loaded")
            return worker
        self.workers[worker.id] = worker
        self._spawn(self._monitor(worker))
        self.release(worker)
        self.on_change()
        return worker

    def spawn(self, coro: Awaitable) -> None:
        """Run ``coro`` beside the pool; it is cancelled when the pool closes."""
        self._spawn(coro)

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _monitor(self, worker: WorkerProcess) -> None:
        assert worker.proc is not None
        await worker.proc.wait()
        self.workers.pop(worker.id, None)
        self._idle_since.pop(worker.id, None)
        self._unlist(worker)
        self._retired.discard(worker.id)
        worker.status = "DEAD"
        worker.close_socket()
        self.on_change()
        name = self.spec.get("model_name")
        if worker.retiring:
            log.info("worker %s of %s stopped (%s)", worker.id, name, worker.exit_description())
            return
        if self._closed:
            log.warning("worker %s of %s exited (%s) while the server is stopping; it is not "
                        "replaced", worker.id, name, worker.exit_description())
            return
        log.error("worker %s of %s exited (%s); restarting", worker.id, name,
                  worker.exit_description())
        self.restarts += 1
        self._spawn(self._replace())

    async def _replace(self) -> None:
        if self._failing_since is None:
            self._failing_since = asyncio.get_running_loop().time()
        while not self._closed and self.live_count + self._pending_starts < self.target:
            failing = asyncio.get_running_loop().time() - self._failing_since
            if self.max_retry_seconds and failing > self.max_retry_seconds:
                self.gave_up = True
                log.error("gave up restarting workers of %s: they kept failing for %.0f s, "
                          "more than maxRetryTimeoutInSec (%g s); scale the model or "
                          "register it again", self.spec.get("model_name"), failing,
                          self.max_retry_seconds)
                return
            delay = min(self.backoff_max, 0.25 * (2 ** self._failures)) if self._failures else 0
            self._failures += 1
            if delay:
                await asyncio.sleep(delay)
            if self._closed or self.live_count + self._pending_starts >= self.target:
                return
            try:
                await self._start_one()
                return
            except ModelLoadError as exc:
                log.error("restarting a worker of %s failed: %s", self.spec.get("model_name"),
                          exc)

    async def scale(self, target: int) -> None:
        """Start or stop workers until ``target`` are live; raise ModelLoadError on failure."""
        self.target = target
        self.gave_up, self._failing_since = False, None
        missing = target - self.live_count - self._pending_starts
        if missing > 0:
            results = await asyncio.gather(*(self._start_past_a_crash() for _ in range(missing)),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0] if isinstance(errors[0], ModelLoadError) else \
                    ModelLoadError(str(errors[0]))
        excess = self.live_count - target
        # idle workers go first; a busy or held one retires after its batches (batch_finished)
        candidates = sorted((w for w in self.workers.values() if not w.retiring),
                            key=lambda w: w.status == "BUSY")
        for worker in candidates[:max(0, excess)]:
            worker.retiring = True
            self._unlist(worker)
            if not worker.held:
                self._list(worker)  # stops it now if it has no batch in flight
        self.on_change()

    async def _start_past_a_crash(self) -> WorkerProcess:
        try:
            return await self._start_one()
        except WorkerCrashed as exc:
            if self._closed:
                raise
            log.warning("a worker of %s crashed while loading the model (%s); starting it "
                        "once more", self.spec.get("model_name"), exc.how)
        try:
            return await self._start_one()
        except WorkerCrashed as exc:
            raise WorkerCrashed(f"{exc.message}\n(its first start crashed too)") from None

    async def close(self) -> None:
        self._closed = True
        self.target = 0
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        await asyncio.gather(*(w.stop("the model is being unloaded")
                               for w in list(self.workers.values())), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

    # --- handing out workers ----------------------------------------------------------------
    async def acquire(self) -> WorkerProcess:
        """A live worker to send a batch to: an idle one if any, else one with room for another
        batch in flight; waits for one if necessary.  Give it back with :meth:`release`."""
        while True:
            worker = self._hold_from(self._idle) or self._hold_from(self._open)
            if worker is not None:
                return worker
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def hold(self, worker: WorkerProcess) -> None:
        """Hold ``worker``, which the caller chose among the live ones nobody holds (the
        sequence batcher, whose sequences are pinned to workers); :meth:`release` it after."""
        self._unlist(worker)
        worker.held = True

    def take_idle(self) -> WorkerProcess | None:
        """An idle worker, held (give it back with :meth:`release`), or None at once."""
        return self._hold_from(self._idle)

    def swap_for_idle(self, worker: WorkerProcess) -> WorkerProcess:
        """An idle worker in place of ``worker`` (held, busy) if one became idle meanwhile."""
        if not worker.in_flight:
            return worker
        other = self._hold_from(self._idle)
        if other is None:
            return worker
        self.release(worker)
        return other

    @staticmethod
    def _hold_from(listed: collections.deque[WorkerProcess]) -> WorkerProcess | None:
        """The first live worker nobody holds in ``listed``, taken out of it and held."""
        while listed:
            worker = listed.popleft()
            if worker.alive and not worker.held:
                worker.held = True
                return worker
        return None

    def release(self, worker: WorkerProcess, succeeded: bool = False) -> None:
        """The holder is done with ``worker`` (it sent a batch to it, or none)."""
        worker.held = False
        if succeeded:
            self._succeeded()
        self._list(worker)

    def batch_finished(self, worker: WorkerProcess, succeeded: bool) -> None:
        """A batch ``worker`` was sent has been answered (or has failed)."""
        if succeeded:
            self._succeeded()
        if self.memory_limit and not self._closed and worker.alive:
            rss = worker.memory_rss()
            if rss > self.memory_limit:
                self._recycle(worker, f"resident memory {rss / 2**20:.0f} MiB is over the "
                                      f"memory limit of {self.memory_limit / 2**20:.0f} MiB")
        if not worker.held:  # else the holder lists it again when it releases it
            self._list(worker)

    def _succeeded(self) -> None:
        self._failures = 0
        self._failing_since = None

    def _list(self, worker: WorkerProcess) -> None:
        """Put ``worker`` where :meth:`acquire` finds it, by how many batches it has in flight;
        a retiring worker is stopped once its last batch is done."""
        if worker.retiring:
            if not worker.in_flight and worker.id not in self._retired and not self._closed \
                    and worker.proc is not None and worker.proc.returncode is None:
                self._retired.add(worker.id)
                self._spawn(self._retire(worker))
            return
        if not worker.alive:
            return
        self._unlist(worker)
        if not worker.in_flight:
            self._idle.append(worker)
            self._idle_since[worker.id] = time.monotonic()
            self.on_idle()
        elif worker.in_flight < self.pipeline_depth:
            self._open.append(worker)
        else:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _unlist(self, worker: WorkerProcess) -> None:
        for listed in (self._idle, self._open):
            if worker in listed:
                listed.remove(worker)

    def _recycle(self, worker: WorkerProcess, reason: str) -> None:
        """Stop ``worker`` (after the batches it was sent) and start another in its place."""
        log.warning("worker %s of %s: %s; restarting it", worker.id,
                    self.spec.get("model_name"), reason)
        worker.retiring = True
        self._recycling[worker.id] = reason
        self.memory_restarts += 1
        self.on_memory_restart()
        self.on_change()
        if not worker.held:
            self._list(worker)  # stops it now if it has no batch in flight

    async def _retire(self, worker: WorkerProcess) -> None:
        """Stop a retiring worker whose batches are done; replace it if it was recycled."""
        reason = self._recycling.pop(worker.id, None)
        await worker.stop(reason or "scaled down")
        if reason is not None:
            await self._replace()

    def describe(self) -> list[dict]:
        return [w.describe() for w in self.workers.values()]

"""The worker processes of one model version: start, scale, hand out, supervise, restart.

A worker that exits unexpectedly is replaced after a backoff that doubles with each consecutive
failure (capped by ``worker_restart_backoff_max``) and resets once a worker answers a batch.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
from typing import Awaitable, Callable

from ..errors import ModelLoadError
from .process import WorkerProcess

log = logging.getLogger("tsf.pool")

_worker_ids = itertools.count(9000)


class WorkerPool:
    """Workers of one model version and the set of those idle."""

    def __init__(self, spec: dict, *, startup_timeout: float, threads_per_worker: int = 0,
                 backoff_max: float = 30.0,
                 on_change: Callable[[], None] | None = None) -> None:
        self.spec = spec
        self.startup_timeout = startup_timeout
        self.threads_per_worker = threads_per_worker
        self.backoff_max = backoff_max
        self.on_change = on_change or (lambda: None)
        self.target = 0
        self.workers: dict[str, WorkerProcess] = {}
        self.restarts = 0
        self._idle: collections.deque[WorkerProcess] = collections.deque()
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._failures = 0
        self._pending_starts = 0
        self._closed = False
        self._tasks: set[asyncio.Task] = set()

    # --- counts -----------------------------------------------------------------------------
    @property
    def live_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.alive)

    def _threads(self) -> int:
        if self.threads_per_worker > 0:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // max(1, self.target))

    # --- lifecycle --------------------------------------------------------------------------
    async def _start_one(self) -> WorkerProcess:
        index = len(self.workers) + self._pending_starts
        worker = WorkerProcess(str(next(_worker_ids)), index, self.spec, self._threads())
        self._pending_starts += 1
        try:
            await worker.start(self.startup_timeout)
        except BaseException:
            worker.kill()
            raise
        finally:
            self._pending_starts -= 1
        if self._closed or self.live_count >= self.target:
            await worker.stop()
            return worker
        self.workers[worker.id] = worker
        self._spawn(self._monitor(worker))
        self.release(worker)
        self.on_change()
        return worker

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _monitor(self, worker: WorkerProcess) -> None:
        assert worker.proc is not None
        code = await worker.proc.wait()
        self.workers.pop(worker.id, None)
        if worker in self._idle:
            self._idle.remove(worker)
        worker.status = "DEAD"
        worker.close_socket()
        self.on_change()
        if worker.retiring or self._closed:
            return
        log.error("worker %s of %s exited with code %s; restarting", worker.id,
                  self.spec.get("model_name"), code)
        self.restarts += 1
        self._spawn(self._replace())

    async def _replace(self) -> None:
        while not self._closed and self.live_count + self._pending_starts < self.target:
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
        missing = target - self.live_count - self._pending_starts
        if missing > 0:
            results = await asyncio.gather(*(self._start_one() for _ in range(missing)),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0] if isinstance(errors[0], ModelLoadError) else \
                    ModelLoadError(str(errors[0]))
        excess = self.live_count - target
        # idle workers go first; a busy one retires after its batch (see release)
        candidates = sorted((w for w in self.workers.values() if not w.retiring),
                            key=lambda w: w.status == "BUSY")
        for worker in candidates[:max(0, excess)]:
            worker.retiring = True
            if worker in self._idle:
                self._idle.remove(worker)
            if worker.status != "BUSY":
                self._spawn(worker.stop())
        self.on_change()

    async def close(self) -> None:
        self._closed = True
        self.target = 0
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        await asyncio.gather(*(w.stop() for w in list(self.workers.values())),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

    # --- handing out workers ----------------------------------------------------------------
    async def acquire(self) -> WorkerProcess:
        """An idle live worker, waiting for one if necessary."""
        while True:
            while self._idle:
                worker = self._idle.popleft()
                if worker.alive:
                    return worker
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def release(self, worker: WorkerProcess, succeeded: bool = False) -> None:
        if succeeded:
            self._failures = 0
        if worker.retiring:
            self._spawn(worker.stop())
            return
        if not worker.alive:
            return
        self._idle.append(worker)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def describe(self) -> list[dict]:
        return [w.describe() for w in self.workers.values()]

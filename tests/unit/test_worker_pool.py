"""WorkerPool supervision without model processes: restart backoff (growing, capped, reset by a
good batch, given up after maxRetryTimeoutInSec), retirement on scale-down after the batch in
hand, and a stopping pool that restarts nothing.  Workers are fakes whose starts succeed or fail
as a test scripts them; no assertion depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Callable

import pytest

from tsf.errors import ModelLoadError
from tsf.workers import pool as pool_module
from tsf.workers.pool import WorkerPool
from tsf.workers.process import WorkerProcess

real_sleep = asyncio.sleep


class FakeProc:
    """Stands for the asyncio subprocess: ``wait()`` returns once ``exit`` is called."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self._exited = asyncio.Event()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()


class FakeWorker(WorkerProcess):
    """A WorkerProcess that spawns nothing.  ``failing_starts`` makes that many next starts
    fail; while ``gate`` is set, starts wait for it."""

    failing_starts = 0
    gate: asyncio.Event | None = None
    started: list["FakeWorker"] = []

    async def start(self, startup_timeout: float) -> None:
        if FakeWorker.gate is not None:
            await FakeWorker.gate.wait()
        await real_sleep(0)
        if FakeWorker.failing_starts:
            FakeWorker.failing_starts -= 1
            raise ModelLoadError(f"worker {self.id}: the model does not load")
        self.proc = FakeProc()  # type: ignore[assignment]
        self.pid = 1
        self.status = "READY"
        FakeWorker.started.append(self)

    def kill(self, reason: str = "") -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.kill_reason = reason
            self.proc.exit(-9)  # type: ignore[attr-defined]

    async def stop(self, reason: str = "", grace: float = 5.0) -> None:
        self.retiring = True
        self.kill_reason = self.kill_reason or reason
        if self.proc is not None:
            self.proc.exit(0)  # type: ignore[attr-defined]
        self.status = "DEAD"

    def crash(self, code: int = 1) -> None:
        self.proc.exit(code)  # type: ignore[union-attr]

    def memory_rss(self) -> int:
        return 0


class RecordedSleep:
    """The pool's view of ``asyncio``, whose ``sleep`` records its delay instead of waiting and
    first calls ``during`` (what happens meanwhile), if a test set it."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.during: Callable[[], None] | None = None

    def __getattr__(self, name: str):
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.during is not None:
            self.during()
        await real_sleep(0)


@pytest.fixture
def fake_workers(monkeypatch):
    """The pool starts FakeWorkers; returns the list of those started."""
    FakeWorker.failing_starts, FakeWorker.gate, FakeWorker.started = 0, None, []
    monkeypatch.setattr(pool_module, "WorkerProcess", FakeWorker)
    return FakeWorker.started


@pytest.fixture
def sleeps(fake_workers, monkeypatch):
    """Fake workers, and the pool's sleeps recorded instead of slept."""
    recorder = RecordedSleep()
    monkeypatch.setattr(pool_module, "asyncio", recorder)
    return recorder


def new_pool(**kwargs) -> WorkerPool:
    return WorkerPool({"model_name": "m"}, startup_timeout=5.0, **kwargs)


async def until(condition, what: str, timeout: float = 30.0) -> None:
    """Let the pool's tasks run until ``condition()`` holds (a generous deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await real_sleep(0.001)


async def settle() -> None:
    """Let every task that can run, run (restarts that should not happen included)."""
    for _ in range(50):
        await real_sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_a_crashed_worker_is_replaced_at_once_the_first_time(sleeps, fake_workers):
    async def main():
        pool = new_pool()
        await pool.scale(1)
        [worker] = fake_workers
        worker.crash()
        await until(lambda: len(fake_workers) == 2, "no replacement started")
        assert pool.restarts == 1 and pool.live_count == 1
        assert sleeps.delays == []  # the first restart does not wait
        assert worker.id not in pool.workers
        await pool.close()
    run(main())


def test_restart_delays_double_up_to_the_cap_while_starts_keep_failing(sleeps, fake_workers):
    async def main():
        pool = new_pool(backoff_max=2.0)
        await pool.scale(1)
        FakeWorker.failing_starts = 5
        fake_workers[0].crash()
        await until(lambda: pool.live_count == 1, "the worker never came back")
        assert sleeps.delays == [0.5, 1.0, 2.0, 2.0, 2.0]
        assert pool.restarts == 1 and not pool.gave_up
        await pool.close()
    run(main())


def test_a_good_batch_resets_the_backoff(sleeps, fake_workers):
    async def main():
        pool = new_pool(backoff_max=30.0)
        await pool.scale(1)
        FakeWorker.failing_starts = 2
        fake_workers[0].crash()
        await until(lambda: pool.live_count == 1, "the worker never came back")
        assert sleeps.delays == [0.5, 1.0]
        # a crash before any batch succeeded keeps backing off
        worker = await pool.acquire()
        pool.release(worker)
        worker.crash()
        await until(lambda: len(fake_workers) == 3, "no replacement started")
        assert sleeps.delays == [0.5, 1.0, 2.0]
        # after a good batch the next crash is replaced at once again
        worker = await pool.acquire()
        pool.release(worker, succeeded=True)
        worker.crash()
        await until(lambda: len(fake_workers) == 4, "no replacement started")
        assert sleeps.delays == [0.5, 1.0, 2.0]
        await pool.close()
    run(main())


def test_a_worker_that_keeps_failing_is_given_up_after_max_retry_seconds(fake_workers):
    # real (short) sleeps here: giving up is decided by the clock
    async def main():
        pool = new_pool(backoff_max=0.01, max_retry_seconds=0.05)
        await pool.scale(1)
        FakeWorker.failing_starts = always = 10**6
        fake_workers[0].crash()
        await until(lambda: pool.gave_up, "the pool never gave up")
        assert pool.live_count == 0 and pool.restarts == 1
        tries = always - FakeWorker.failing_starts
        assert tries >= 1
        await real_sleep(0.1)
        assert always - FakeWorker.failing_starts == tries  # no start after giving up
        # scaling again (a new register or scale call) tries afresh
        FakeWorker.failing_starts = 0
        await pool.scale(1)
        assert pool.live_count == 1 and not pool.gave_up
        await pool.close()
    run(main())


def test_a_good_batch_restarts_the_count_towards_giving_up(fake_workers):
    async def main():
        pool = new_pool(backoff_max=0.01, max_retry_seconds=0.05)
        await pool.scale(1)
        FakeWorker.failing_starts = 1
        fake_workers[0].crash()
        await until(lambda: pool.live_count == 1, "the worker never came back")
        worker = await pool.acquire()
        pool.release(worker, succeeded=True)
        await real_sleep(0.1)  # longer than max_retry_seconds since the failures began
        worker.crash()
        await until(lambda: len(fake_workers) == 3 or pool.gave_up, "nothing happened")
        assert not pool.gave_up and pool.live_count == 1
        await pool.close()
    run(main())


def test_scale_down_stops_idle_workers_first_and_busy_ones_after_their_batch(fake_workers):
    async def main():
        pool = new_pool()
        await pool.scale(3)
        busy = [await pool.acquire(), await pool.acquire()]
        for worker in busy:
            worker.status = "BUSY"  # as run_batch marks it
        [idle] = [w for w in fake_workers if w not in busy]
        await pool.scale(1)
        await until(lambda: idle.proc.returncode is not None, "the idle worker kept running")
        assert idle.kill_reason == "scaled down"
        retiring = [w for w in busy if w.retiring]
        assert len(retiring) == 1
        [leaving] = retiring
        assert leaving.proc.returncode is None  # its batch is still running
        [staying] = [w for w in busy if w is not leaving]
        for worker in busy:
            worker.status = "READY"
            pool.release(worker, succeeded=True)
        await until(lambda: leaving.proc.returncode is not None, "the retiring worker stayed")
        await settle()
        assert leaving.kill_reason == "scaled down"
        assert staying.proc.returncode is None and pool.live_count == 1
        assert pool.restarts == 0 and len(fake_workers) == 3  # retired, not replaced
        assert await pool.acquire() is staying
        await pool.close()
    run(main())


def test_a_stopping_pool_restarts_nothing(sleeps, fake_workers):
    async def main():
        pool = new_pool()
        await pool.scale(2)
        pool.stop_restarting()
        for worker in list(fake_workers):
            worker.crash()
        await until(lambda: not pool.workers, "the workers' exits were not noticed")
        await settle()
        assert pool.restarts == 0 and len(fake_workers) == 2 and sleeps.delays == []
        await pool.close()
    run(main())


def test_a_worker_sigtermed_from_outside_is_replaced_after_the_grace(sleeps, fake_workers):
    async def main():
        pool = new_pool()
        await pool.scale(1)
        fake_workers[0].crash(-signal.SIGTERM)
        await until(lambda: len(fake_workers) == 2, "no replacement started")
        assert sleeps.delays == [pool_module.TERM_GRACE] and pool.live_count == 1
        await pool.close()
    run(main())


def test_a_sigterm_that_also_stops_the_server_replaces_nothing(sleeps, fake_workers):
    async def main():
        pool = new_pool()
        await pool.scale(1)
        sleeps.during = pool.stop_restarting  # the front end begins stopping in the grace
        fake_workers[0].crash(-signal.SIGTERM)
        await until(lambda: not pool.workers, "the worker's exit was not noticed")
        await settle()
        assert sleeps.delays == [pool_module.TERM_GRACE]
        assert len(fake_workers) == 1 and pool.restarts == 0
        await pool.close()
    run(main())


def test_a_closed_pool_stops_its_workers_and_restarts_none(fake_workers):
    async def main():
        pool = new_pool()
        await pool.scale(2)
        await pool.close()
        await settle()
        assert all(w.proc.returncode is not None for w in fake_workers)
        assert pool.live_count == 0 and pool.restarts == 0 and len(fake_workers) == 2
    run(main())


def test_a_worker_that_loads_once_the_server_is_stopping_is_stopped_not_kept(fake_workers):
    async def main():
        pool = new_pool()
        FakeWorker.gate = asyncio.Event()
        scaling = asyncio.ensure_future(pool.scale(1))
        await until(lambda: pool.starting_count == 1, "the start never began")
        pool.stop_restarting()
        FakeWorker.gate.set()
        await scaling
        [worker] = fake_workers
        assert worker.proc.returncode is not None and pool.live_count == 0
        assert worker.id not in pool.workers
    run(main())

"""WorkerPool supervision without model processes: restart backoff (growing, capped, reset by a
good batch, given up after maxRetryTimeoutInSec), retirement on scale-down after the batch in
hand, and a stopping pool that restarts nothing.  Workers are fakes whose starts succeed or fail
as a test scripts them; no assertion depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import pytest

from tsf.batching.batcher import Batcher
from tsf.batching.queue import BatchQueue, Job
from tsf.errors import (BatchNotStarted, ModelLoadError, ServiceUnavailable, WorkerCrashed,
                        WorkerDied)
from tsf.workers import pool as pool_module
from tsf.workers.messages import Answer, BatchResult, Request
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
    fail, ``crashing_starts`` that many crash (after the failing ones); while ``gate`` is set,
    starts wait for it."""

    failing_starts = 0
    crashing_starts = 0
    gate: asyncio.Event | None = None
    started: list["FakeWorker"] = []
    send_error: Exception | None = None  # send_batch raises it, while set

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cancels: list[tuple[int, int]] = []
        self.stops = 0

    async def start(self, startup_timeout: float) -> None:
        if FakeWorker.gate is not None:
            await FakeWorker.gate.wait()
        await real_sleep(0)
        if FakeWorker.failing_starts:
            FakeWorker.failing_starts -= 1
            raise ModelLoadError(f"worker {self.id}: the model does not load")
        if FakeWorker.crashing_starts:
            FakeWorker.crashing_starts -= 1
            raise WorkerCrashed(f"worker {self.id} crashed", how="killed by SIGSEGV")
        self.proc = FakeProc()  # type: ignore[assignment]
        self.pid = 1
        self.status = "READY"
        FakeWorker.started.append(self)

    def kill(self, reason: str = "") -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.kill_reason = reason
            self.proc.exit(-9)  # type: ignore[attr-defined]

    async def stop(self, reason: str = "", grace: float = 5.0) -> None:
        self.stops += 1
        self.retiring = True
        self.kill_reason = self.kill_reason or reason
        if self.proc is not None:
            self.proc.exit(0)  # type: ignore[attr-defined]
        self.status = "DEAD"

    def crash(self, code: int = 1) -> None:
        self.proc.exit(code)  # type: ignore[union-attr]

    def send_batch(self, batch, timeout, on_done, on_partial=None) -> int:
        """Keep the batch in flight until the test answers it (see :meth:`answer`)."""
        if FakeWorker.send_error is not None:
            raise FakeWorker.send_error
        number = self._sent
        self._sent += 1
        self._in_flight.append((number, batch, on_done))  # type: ignore[arg-type]
        self.status = "BUSY"
        return number

    def sent_ids(self) -> list[list[str]]:
        """The request ids of each batch in flight."""
        return [[r.id for r in batch.requests] for _, batch, _ in self._in_flight]

    def cancel(self, number: int, index: int) -> bool:
        self.cancels.append((number, index))
        return any(n == number for n, _, _ in list(self._in_flight)[1:])

    def answer(self, skip: tuple[int, ...] = ()) -> None:
        """Answer the oldest batch in flight, each request with its id (or, at the indexes in
        ``skip``, as the worker answers a request it skipped)."""
        _, batch, on_done = self._in_flight.popleft()  # type: ignore[misc]
        self.status = "BUSY" if self._in_flight else "READY"
        answers = [Answer(499, "application/json", b'{"message": "went away"}', error=True)
                   if i in skip else Answer(200, "text/plain", r.id.encode())
                   for i, r in enumerate(batch.requests)]
        on_done(BatchResult(answers), None, time.monotonic())

    def die_with_batches_in_flight(self) -> None:
        """Die computing the oldest batch; the others were never begun (and come back to the
        batcher last first, as WorkerProcess hands them back)."""
        (_, _, head), *waiting = list(self._in_flight)  # type: ignore[misc]
        self._in_flight.clear()
        self.status = "DEAD"
        head(None, WorkerDied("died while processing the batch"), time.monotonic())
        for _, _, on_done in reversed(waiting):
            on_done(None, BatchNotStarted("died before it began this batch"), 0.0)

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
    FakeWorker.crashing_starts = 0
    FakeWorker.send_error = None
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


def test_scaling_starts_a_worker_that_crashed_while_loading_once_more(fake_workers):
    async def main():
        pool = new_pool()
        FakeWorker.crashing_starts = 2  # one crash for each of the two workers
        await pool.scale(2)
        assert pool.live_count == 2 and FakeWorker.crashing_starts == 0
        await pool.close()
    run(main())


def test_scaling_fails_on_a_second_crash_or_on_a_load_error_without_another_try(fake_workers):
    async def main():
        pool = new_pool()
        FakeWorker.crashing_starts = 2
        with pytest.raises(WorkerCrashed, match="its first start crashed too"):
            await pool.scale(1)
        assert pool.live_count == 0 and FakeWorker.crashing_starts == 0
        FakeWorker.failing_starts, FakeWorker.crashing_starts = 1, 1
        with pytest.raises(ModelLoadError, match="does not load"):
            await pool.scale(1)
        assert pool.live_count == 0 and FakeWorker.crashing_starts == 1  # not tried again
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


# --- several batches in flight per worker (worker_pipeline_depth) -----------------------------

async def _acquired_within(pool: WorkerPool, seconds: float = 0.05):
    try:
        return await asyncio.wait_for(pool.acquire(), seconds)
    except asyncio.TimeoutError:
        return None


def _send(worker: FakeWorker, pool: WorkerPool) -> None:
    worker.send_batch(None, 1.0, lambda *_: pool.batch_finished(worker, True))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_a_busy_worker_is_handed_out_again_while_its_pipeline_has_room(fake_workers, depth):
    async def main():
        pool = new_pool(pipeline_depth=depth)
        await pool.scale(1)
        [worker] = fake_workers
        for _ in range(depth):
            assert await _acquired_within(pool) is worker
            _send(worker, pool)
            pool.release(worker)
        assert await _acquired_within(pool) is None  # depth batches in flight: full
        waiting = asyncio.ensure_future(pool.acquire())
        await settle()
        worker._in_flight.popleft()
        pool.batch_finished(worker, True)  # one answered: room for one more
        assert await asyncio.wait_for(waiting, 5) is worker
        pool.release(worker)
        await pool.close()
    run(main())


def test_an_idle_worker_goes_before_a_busy_one(fake_workers):
    async def main():
        pool = new_pool(pipeline_depth=2)
        await pool.scale(2)
        first = await pool.acquire()
        _send(first, pool)
        pool.release(first)
        second = await pool.acquire()
        assert second is not first  # idle before busy
        pool.release(second)
        held = await pool.acquire()
        assert held is second
        _send(held, pool)
        pool.release(held)
        held = await pool.acquire()  # both busy: one of them, with room
        assert held.in_flight == 1
        other = first if held is second else second
        other._in_flight.popleft()
        pool.batch_finished(other, True)  # the other became idle while the batch filled
        assert pool.swap_for_idle(held) is other
        pool.release(other)
        await pool.close()
    run(main())


def test_a_retiring_worker_stops_after_its_last_batch_in_flight(fake_workers):
    async def main():
        pool = new_pool(pipeline_depth=2)
        await pool.scale(1)
        [worker] = fake_workers
        for _ in range(2):
            held = await pool.acquire()
            _send(held, pool)
            pool.release(held)
        await pool.scale(0)
        await settle()
        assert worker.retiring and worker.proc.returncode is None
        worker._in_flight.popleft()
        pool.batch_finished(worker, True)
        await settle()
        assert worker.proc.returncode is None  # one batch still in flight
        worker._in_flight.popleft()
        pool.batch_finished(worker, True)
        await until(lambda: worker.proc.returncode is not None, "the retiring worker stayed")
        assert worker.kill_reason == "scaled down" and pool.restarts == 0
        await pool.close()
    run(main())


def test_a_retiring_worker_that_dies_with_batches_in_flight_is_stopped_once(fake_workers):
    async def main():
        pool = new_pool(pipeline_depth=3)
        await pool.scale(1)
        [worker] = fake_workers
        for _ in range(3):
            held = await pool.acquire()
            _send(held, pool)
            pool.release(held)
        await pool.scale(0)
        worker.die_with_batches_in_flight()  # each batch's callback finds nothing in flight
        await until(lambda: worker.proc.returncode is not None, "the worker was not stopped")
        await settle()
        assert worker.stops == 1
        await pool.close()
    run(main())


def _jobs(loop, names):
    return [Job(Request(name, []), loop.create_future()) for name in names]


async def _batcher_on_one_worker(depth: int, **settings) -> tuple[WorkerPool, FakeWorker,
                                                                    Batcher]:
    """A started batcher (batch size 1, no delay, unless ``settings`` say otherwise) over a
    pool of one fake worker."""
    pool = new_pool(pipeline_depth=depth)
    await pool.scale(1)
    [worker] = FakeWorker.started
    batcher = Batcher(BatchQueue(10), pool, **{"batch_size": 1, "max_batch_delay_ms": 0,
                                               "response_timeout": 10, **settings})
    batcher.start()
    return pool, worker, batcher


async def _stop(pool: WorkerPool, batcher: Batcher) -> None:
    await batcher.stop(ServiceUnavailable("test over"))
    await pool.close()


def test_the_batcher_sends_the_next_batch_before_the_worker_answers(fake_workers):
    async def main():
        loop = asyncio.get_running_loop()
        pool, worker, batcher = await _batcher_on_one_worker(2, batch_size=2)
        jobs = _jobs(loop, "abcdef")
        for job in jobs:
            batcher.submit(job)
        await until(lambda: worker.in_flight == 2, "the second batch was not sent")
        await settle()
        assert worker.in_flight == 2  # not a third: the pipeline is full
        assert worker.sent_ids() == [["a", "b"], ["c", "d"]]
        worker.answer()
        await until(lambda: worker.in_flight == 2, "the third batch was not sent")
        worker.answer()
        worker.answer()
        answers = await asyncio.gather(*(job.future for job in jobs))
        assert [a.body for a in answers] == [b"a", b"b", b"c", b"d", b"e", b"f"]
        await _stop(pool, batcher)
    run(main())


@pytest.mark.parametrize("depth", [2, 3])
def test_batches_a_dead_worker_never_began_go_back_to_the_queue(sleeps, fake_workers, depth):
    async def main():
        loop = asyncio.get_running_loop()
        pool, worker, batcher = await _batcher_on_one_worker(depth)
        jobs = _jobs(loop, "xyz")
        for job in jobs:
            batcher.submit(job)
        await until(lambda: worker.in_flight == min(depth, 3), "the batches were not sent")
        worker.die_with_batches_in_flight()
        worker.crash(-9)
        with pytest.raises(WorkerDied):
            await jobs[0].future  # the batch it was computing fails
        assert not jobs[1].future.done() and not jobs[2].future.done()
        await until(lambda: len(fake_workers) == 2, "no replacement started")
        replacement = fake_workers[1]
        await until(lambda: replacement.in_flight == 2, "the queued jobs were not sent again")
        assert replacement.sent_ids() == [["y"], ["z"]]  # in their order
        replacement.answer()
        replacement.answer()
        assert [(await job.future).body for job in jobs[1:]] == [b"y", b"z"]
        await _stop(pool, batcher)
    run(main())


def test_a_batch_that_cannot_be_sent_fails_alone(fake_workers):
    async def main():
        loop = asyncio.get_running_loop()
        pool, worker, batcher = await _batcher_on_one_worker(2)
        FakeWorker.send_error = ValueError("a blob that is not bytes")
        [bad] = _jobs(loop, "b")
        batcher.submit(bad)
        with pytest.raises(Exception, match="could not be sent"):
            await asyncio.wait_for(bad.future, 5)
        FakeWorker.send_error = None
        [good] = _jobs(loop, "g")
        batcher.submit(good)  # the batcher still runs, and the worker was given back
        await until(lambda: worker.in_flight == 1, "the next batch was not sent")
        worker.answer()
        assert (await good.future).body == b"g"
        await _stop(pool, batcher)
    run(main())


def test_a_job_that_expires_behind_a_busy_workers_batch(fake_workers, caplog):
    # clientTimeoutInMills passes while the job's batch waits in the worker's socket: it is
    # answered 503 at once and the worker is asked to skip it; if the worker had begun the
    # batch before the cancel reached it, the log says the request ran all the same
    async def main():
        loop = asyncio.get_running_loop()
        pool, worker, batcher = await _batcher_on_one_worker(2, client_timeout_ms=50)
        first, skipped = _jobs(loop, "fs")
        batcher.submit(first)
        batcher.submit(skipped)
        await until(lambda: worker.in_flight == 2, "the second batch was not sent")
        with pytest.raises(ServiceUnavailable, match="clientTimeoutInMills"):
            await asyncio.wait_for(skipped.future, 5)  # at its timeout, not after "first"
        assert worker.cancels == [(1, 0)] and not first.future.done()
        worker.answer()
        worker.answer(skip=(0,))  # the worker skipped it
        assert (await first.future).body == b"f"
        head, late = _jobs(loop, "hl")
        batcher.submit(head)
        await until(lambda: worker.in_flight == 1, "the third batch was not sent")
        batcher.submit(late)
        await until(lambda: worker.in_flight == 2, "the fourth batch was not sent")
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(late.future, 5)
        worker.answer()
        assert "ran it" not in caplog.text
        worker.answer()  # the worker had begun it before the cancel came, and ran it
        assert (await head.future).body == b"h"
        assert "ran it" in caplog.text
        await _stop(pool, batcher)
    run(main())


def test_the_batcher_holds_no_worker_once_the_queue_is_empty(fake_workers):
    # a job that expires while the batcher waits for a worker leaves nothing to send: the
    # worker it then gets goes back at once, so scaling down stops it
    async def main():
        loop = asyncio.get_running_loop()
        pool, worker, batcher = await _batcher_on_one_worker(1, client_timeout_ms=50)
        first, expiring = _jobs(loop, "fe")
        batcher.submit(first)
        await until(lambda: worker.in_flight == 1, "the first batch was not sent")
        batcher.submit(expiring)
        with pytest.raises(ServiceUnavailable):
            await expiring.future  # expired in the queue: no worker was free
        worker.answer()
        await first.future
        await settle()
        assert not worker.held
        await pool.scale(0)
        await until(lambda: worker.proc.returncode is not None, "the worker was not stopped")
        await _stop(pool, batcher)
    run(main())


def test_a_batch_for_a_busy_worker_goes_full_or_once_a_worker_is_idle(fake_workers):
    # max_batch_delay 0: a batch for an idle worker goes at once, but one for a busy worker
    # keeps filling (it could not begin sooner), so later requests still join it
    async def main():
        loop = asyncio.get_running_loop()
        pool, worker, batcher = await _batcher_on_one_worker(2, batch_size=4)
        jobs = dict(zip("abcdef", _jobs(loop, "abcdef")))
        batcher.submit(jobs["a"])
        await until(lambda: worker.in_flight == 1, "the first batch was not sent")
        batcher.submit(jobs["b"])
        batcher.submit(jobs["c"])
        await real_sleep(0.05)
        assert worker.sent_ids() == [["a"]]  # not sent half full behind "a"
        batcher.submit(jobs["d"])
        batcher.submit(jobs["e"])
        await until(lambda: worker.in_flight == 2, "the full batch was not sent")
        assert worker.sent_ids() == [["a"], ["b", "c", "d", "e"]]
        batcher.submit(jobs["f"])
        worker.answer()
        await settle()
        assert worker.sent_ids() == [["b", "c", "d", "e"]]  # still busy: "f" keeps waiting
        worker.answer()
        await until(lambda: worker.in_flight == 1, "the last batch was not sent")
        assert worker.sent_ids() == [["f"]]  # the worker is idle: the delay rule sends it
        worker.answer()
        assert [(await job.future).body for job in jobs.values()] == [b"a", b"b", b"c", b"d",
                                                                      b"e", b"f"]
        await _stop(pool, batcher)
    run(main())


def test_a_batch_filling_for_a_busy_worker_goes_to_a_worker_that_starts(fake_workers):
    async def main():
        loop = asyncio.get_running_loop()
        pool, busy, batcher = await _batcher_on_one_worker(2, batch_size=4)
        first, second, third = _jobs(loop, "abc")
        batcher.submit(first)
        await until(lambda: busy.in_flight == 1, "the first batch was not sent")
        batcher.submit(second)
        batcher.submit(third)
        await real_sleep(0.05)
        assert busy.sent_ids() == [["a"]]  # the next batch fills for the busy worker
        await pool.scale(2)  # a worker starts (autoscaling, a restart): the batch goes to it
        [started] = [w for w in fake_workers if w is not busy]
        await until(lambda: started.in_flight == 1, "the new worker got nothing")
        assert started.sent_ids() == [["b", "c"]] and busy.sent_ids() == [["a"]]
        busy.answer()
        started.answer()
        assert [(await j.future).body for j in (first, second, third)] == [b"a", b"b", b"c"]
        await _stop(pool, batcher)
    run(main())

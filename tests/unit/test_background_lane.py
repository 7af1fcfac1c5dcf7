"""Background priority: stored jobs use the workers online requests leave idle, never more than
job_share of them, never mixed into an online batch; cancelled ones leave the lane; a batch no
worker began goes back to the lane."""

from __future__ import annotations

import asyncio
import time

import pytest

from tsf.batching.background import BackgroundJob
from tsf.batching.batcher import Batcher
from tsf.batching.queue import BatchQueue, Job
from tsf.errors import BatchNotStarted, ServiceUnavailable
from tsf.workers import pool as pool_module
from tsf.workers.messages import Answer, BatchResult, Request
from tsf.workers.pool import WorkerPool
from tsf.workers.process import WorkerProcess


class FakeProc:
    returncode = None

    async def wait(self) -> int:
        await asyncio.Event().wait()
        return 0


class FakeWorker(WorkerProcess):
    """Spawns nothing; keeps each batch until the test answers it."""

    async def start(self, startup_timeout: float) -> None:
        self.proc = FakeProc()  # type: ignore[assignment]
        self.status = "READY"

    def send_batch(self, batch, timeout, on_done, on_partial=None) -> int:
        self._in_flight.append((batch, on_done))  # type: ignore[arg-type]
        self.status = "BUSY"
        return 0

    def sent(self) -> list[list[str]]:
        return [[r.id for r in batch.requests] for batch, _ in self._in_flight]

    def answer(self, error: Exception | None = None) -> None:
        batch, on_done = self._in_flight.popleft()  # type: ignore[misc]
        self.status = "BUSY" if self._in_flight else "READY"
        if error is not None:
            on_done(None, error, 0.0)
            return
        on_done(BatchResult([Answer(200, "text/plain", r.id.encode())
                             for r in batch.requests]), None, time.monotonic())

    async def stop(self, reason: str = "", grace: float = 5.0) -> None:
        self.status = "DEAD"


def _quiet(jobs) -> None:
    """Retrieve the errors of jobs a test leaves failing, so asyncio does not log them."""
    for job in jobs:
        job.future.add_done_callback(lambda f: f.cancelled() or f.exception())


@pytest.fixture(autouse=True)
def fake_workers(monkeypatch):
    monkeypatch.setattr(pool_module, "WorkerProcess", FakeWorker)


async def _version(workers: int, batch_size: int = 2) -> tuple[WorkerPool, Batcher]:
    pool = WorkerPool({"model_name": "m"}, startup_timeout=5.0, pipeline_depth=2)
    await pool.scale(workers)
    batcher = Batcher(BatchQueue(100), pool, batch_size=batch_size, max_batch_delay_ms=0,
                      response_timeout=60)
    batcher.start()
    return pool, batcher


def _background(loop, names: str) -> list[BackgroundJob]:
    jobs = [BackgroundJob(Request(n, []), loop.create_future()) for n in names]
    _quiet(jobs)
    return jobs


async def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.001)


def _workers(pool: WorkerPool) -> list[FakeWorker]:
    return sorted(pool.workers.values(), key=lambda w: w.index)  # type: ignore[return-value]


def run(coro):
    return asyncio.run(coro)


def test_jobs_fill_idle_workers_in_batches_up_to_batch_size():
    async def main():
        loop = asyncio.get_running_loop()
        pool, batcher = await _version(2, batch_size=2)
        jobs = _background(loop, "abcde")
        for job in jobs:
            batcher.submit_background(job, 1.0)
        await _until(lambda: all(w.in_flight for w in _workers(pool)), "both not busy")
        first, second = _workers(pool)
        assert sorted(first.sent() + second.sent()) == [["a", "b"], ["c", "d"]]
        assert first.in_flight == second.in_flight == 1  # never behind another batch
        first.answer()
        await _until(lambda: jobs[4].dispatched, "the last job was not sent")
        assert [r.body for r in await asyncio.gather(*(j.future for j in jobs[:2]))] in (
            [b"a", b"b"], [b"c", b"d"])
        await batcher.stop(ServiceUnavailable("over"), wait=0.01)
    run(main())


def test_an_online_request_goes_first_and_waits_for_one_background_batch_at_most():
    async def main():
        loop = asyncio.get_running_loop()
        pool, batcher = await _version(1, batch_size=2)
        jobs = _background(loop, "abcd")
        for job in jobs[:2]:
            batcher.submit_background(job, 1.0)
        [worker] = _workers(pool)
        await _until(lambda: worker.in_flight == 1, "the background batch was not sent")
        online = Job(Request("online", []), loop.create_future())
        batcher.submit(online)
        for job in jobs[2:]:
            batcher.submit_background(job, 1.0)
        await asyncio.sleep(0.02)
        assert worker.sent() == [["a", "b"]]  # it could not begin earlier: its batch fills
        worker.answer()
        # the online request goes next, alone: no background batch while online work waits
        await _until(lambda: worker.in_flight == 1, "the online request was not sent")
        assert worker.sent() == [["online"]]
        worker.answer()
        assert (await online.future).body == b"online"
        await _until(lambda: worker.sent() == [["c", "d"]], "the jobs did not resume")
        await batcher.stop(ServiceUnavailable("over"), wait=0.01)
    run(main())


def test_while_online_requests_run_jobs_hold_at_most_job_share_of_the_workers():
    async def main():
        loop = asyncio.get_running_loop()
        pool, batcher = await _version(4, batch_size=1)
        workers = _workers(pool)
        online = Job(Request("online", []), loop.create_future())
        batcher.submit(online)
        await _until(lambda: online.dispatched, "the online request was not sent")
        for job in _background(loop, "abcdefgh"):
            batcher.submit_background(job, 0.5)
        await _until(lambda: sum(w.in_flight for w in workers) == 3, "not two job batches")
        await asyncio.sleep(0.02)
        assert sum(w.in_flight for w in workers) == 3  # online + half of 4 workers for jobs
        busy_online = next(w for w in workers if w.sent() == [["online"]])
        busy_online.answer()
        assert (await online.future).body == b"online"
        # no online request at the workers any more: jobs may use every idle worker
        await _until(lambda: all(w.in_flight for w in workers), "jobs did not take them all")
        await batcher.stop(ServiceUnavailable("over"), wait=0.01)
    run(main())


def test_job_share_zero_leaves_the_workers_to_online_requests_while_they_run():
    async def main():
        loop = asyncio.get_running_loop()
        pool, batcher = await _version(2, batch_size=1)
        online = Job(Request("online", []), loop.create_future())
        batcher.submit(online)
        await _until(lambda: online.dispatched, "the online request was not sent")
        jobs = _background(loop, "ab")
        for job in jobs:
            batcher.submit_background(job, 0.0)
        await asyncio.sleep(0.02)
        assert not any(job.dispatched for job in jobs)
        next(w for w in _workers(pool) if w.in_flight).answer()
        await _until(lambda: all(job.dispatched for job in jobs), "the jobs did not run")
        await batcher.stop(ServiceUnavailable("over"), wait=0.01)
    run(main())


def test_jobs_go_when_the_quiet_time_ends_between_two_looks_at_the_clock():
    """The lane looked once while online traffic was a few microseconds from quiet, then again
    when it was quiet: it must still wake (it slept for good, and a job backlog stopped)."""
    async def main():
        loop = asyncio.get_running_loop()
        pool, batcher = await _version(1, batch_size=2)
        batcher.online_sent = time.monotonic()  # an online batch went out just now
        jobs = _background(loop, "ab")
        for job in jobs:
            batcher.submit_background(job, 0.0)
        looks = iter([0.00001])
        batcher.lane._quiet_in = lambda: next(looks, 0.0)  # quiet from its second look on
        await _until(lambda: all(job.dispatched for job in jobs), "the jobs never went")
        await batcher.stop(ServiceUnavailable("over"), wait=0.01)
    run(main())


def test_a_cancelled_job_leaves_the_lane_and_a_batch_not_begun_comes_back():
    async def main():
        loop = asyncio.get_running_loop()
        pool, batcher = await _version(1, batch_size=1)
        jobs = _background(loop, "abc")
        for job in jobs:
            batcher.submit_background(job, 1.0)
        [worker] = _workers(pool)
        await _until(lambda: worker.in_flight == 1, "not sent")
        jobs[1].abandon("cancelled")
        await asyncio.sleep(0)  # done-callbacks run on the loop
        assert len(batcher.lane) == 1  # b left the lane; c waits
        worker.answer(BatchNotStarted("died before it began"))
        await _until(lambda: worker.in_flight == 1, "not sent again")
        assert worker.sent() == [["a"]] and len(batcher.queue) == 0  # back in the lane
        worker.answer()
        await _until(lambda: worker.sent() == [["c"]], "c was not sent")
        assert not jobs[1].dispatched
        await batcher.stop(ServiceUnavailable("over"), wait=0.01)
        with pytest.raises(ServiceUnavailable):
            batcher.submit_background(_background(loop, "z")[0], 1.0)
    run(main())


def test_stopping_fails_the_jobs_still_in_the_lane():
    async def main():
        loop = asyncio.get_running_loop()
        pool, batcher = await _version(1, batch_size=1)
        jobs = _background(loop, "ab")
        for job in jobs:
            batcher.submit_background(job, 1.0)
        [worker] = _workers(pool)
        await _until(lambda: worker.in_flight == 1, "not sent")
        stop = asyncio.ensure_future(batcher.stop(ServiceUnavailable("unregistered"), wait=0.05))
        with pytest.raises(ServiceUnavailable, match="unregistered"):
            await jobs[1].future
        await stop
    run(main())

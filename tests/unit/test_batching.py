"""Batch assembly rules of BatchQueue."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from tsf.batching.queue import BatchQueue, Job
from tsf.errors import ServiceUnavailable
from tsf.workers.messages import Request


def _job(loop, arrival=None):
    job = Job(Request("r", []), loop.create_future())
    if arrival is not None:
        job.arrival = arrival
    return job


def run(coro):
    return asyncio.run(coro)


def test_batch_fills_up_to_batch_size_without_waiting():
    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(100)
        for _ in range(5):
            queue.put(_job(loop))
        start = time.monotonic()
        batch = await queue.fill(4, max_delay=5.0)
        assert len(batch) == 4 and time.monotonic() - start < 0.5
        assert len(queue) == 1
    run(main())


def test_delay_is_counted_from_the_first_job_not_from_the_poll():
    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(100)
        queue.put(_job(loop, arrival=time.monotonic() - 1.0))  # waited 1 s behind a busy worker
        start = time.monotonic()
        batch = await queue.fill(8, max_delay=0.5)
        assert len(batch) == 1 and time.monotonic() - start < 0.1
    run(main())


def test_waits_for_more_jobs_until_the_delay_passes():
    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(100)
        queue.put(_job(loop))
        loop.call_later(0.05, queue.put, _job(loop))
        start = time.monotonic()
        batch = await queue.fill(8, max_delay=0.3)
        elapsed = time.monotonic() - start
        assert len(batch) == 2 and 0.25 <= elapsed < 1.0
    run(main())


def test_full_queue_refuses_at_once():
    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(2)
        queue.put(_job(loop))
        queue.put(_job(loop))
        with pytest.raises(ServiceUnavailable, match="job_queue_size"):
            queue.put(_job(loop))
    run(main())


def test_finished_jobs_are_skipped():
    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(10)
        gone, kept = _job(loop), _job(loop)
        gone.future.set_exception(ServiceUnavailable("expired"))
        gone.future.exception()
        queue.put(gone)
        queue.put(kept)
        assert await queue.fill(4, 0.0) == [kept]
    run(main())


def test_abandoned_jobs_leave_the_queue_and_are_counted():
    from tsf.batching.batcher import Batcher
    from tsf.errors import ClientGone

    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(2)
        stages: list[str] = []
        observer = SimpleNamespace(abandoned=stages.append)
        batcher = Batcher(queue, pool=None, batch_size=4, max_batch_delay_ms=0,
                          response_timeout=60, observer=observer)
        jobs = [_job(loop) for _ in range(2)]
        for job in jobs:
            batcher.submit(job)
        with pytest.raises(ServiceUnavailable):  # full
            batcher.submit(_job(loop))
        jobs[0].abandon()           # an HTTP client hung up
        jobs[1].future.cancel()     # a gRPC call was cancelled
        await asyncio.sleep(0)      # done-callbacks run on the loop
        assert len(queue) == 0 and stages == ["queued", "queued"]
        assert isinstance(jobs[0].future.exception(), ClientGone)
        batcher.submit(_job(loop))  # room again: the limit counts live requests only
        assert len(queue) == 1
    run(main())


def test_a_lone_job_never_waits_past_its_delay(monkeypatch):
    from tsf.batching.queue import TIMER_SLACK

    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(10)
        job = _job(loop)
        queue.put(job)
        asked: list[float] = []
        real_wait = queue._wait

        async def recording_wait(timeout):
            asked.append(timeout)
            await real_wait(timeout)

        monkeypatch.setattr(queue, "_wait", recording_wait)
        batch = await queue.fill(8, max_delay=0.05)
        assert batch == [job]
        # every timer is set at least the loop's rounding before the deadline
        assert asked and all(t <= 0.05 - TIMER_SLACK + 1e-6 for t in asked), asked
        assert time.monotonic() <= job.arrival + 0.05 + 0.02
    run(main())

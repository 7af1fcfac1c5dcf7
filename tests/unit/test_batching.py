"""Batch assembly rules of BatchQueue."""

from __future__ import annotations

import asyncio
import time

import pytest

from tsf.batching import BatchQueue, Job
from tsf.errors import ServiceUnavailable


def _job(loop, arrival=None):
    job = Job("predict", {}, [], loop.create_future())
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
        batch = await queue.next_batch(4, max_delay=5.0)
        assert len(batch) == 4 and time.monotonic() - start < 0.5
        assert len(queue) == 1
    run(main())


def test_delay_is_counted_from_the_first_job_not_from_the_poll():
    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(100)
        queue.put(_job(loop, arrival=time.monotonic() - 1.0))  # waited 1 s behind a busy worker
        start = time.monotonic()
        batch = await queue.next_batch(8, max_delay=0.5)
        assert len(batch) == 1 and time.monotonic() - start < 0.1
    run(main())


def test_waits_for_more_jobs_until_the_delay_passes():
    async def main():
        loop = asyncio.get_running_loop()
        queue = BatchQueue(100)
        queue.put(_job(loop))
        loop.call_later(0.05, queue.put, _job(loop))
        start = time.monotonic()
        batch = await queue.next_batch(8, max_delay=0.3)
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
        assert await queue.next_batch(4, 0.0) == [kept]
    run(main())

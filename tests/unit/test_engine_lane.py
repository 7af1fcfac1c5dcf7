"""The engine lane: requests go to engine workers one by one while they have room, the rest
queue, and past the queue a 503 with Retry-After; a client that leaves is cancelled in its
worker."""

from __future__ import annotations

import asyncio

import pytest

from tsf.batching.engine_lane import EngineLane
from tsf.batching.queue import BatchQueue, Job
from tsf.errors import ServiceUnavailable
from tsf.workers.messages import Answer, BatchResult, Request


class FakeWorker:
    """An engine worker that holds what it is sent until told to answer."""

    def __init__(self, name: str) -> None:
        self.id = name
        self.alive = True
        self.on_stats = None
        self.sent: dict[int, tuple] = {}
        self.cancelled: list[int] = []
        self._number = 0

    @property
    def in_flight(self) -> int:
        return len(self.sent)

    def submit(self, request, timeout, on_done, on_partial=None) -> int:
        self._number += 1
        self.sent[self._number] = (request, on_done, on_partial)
        return self._number

    def cancel(self, number, index=0) -> bool:
        self.cancelled.append(number)
        return False

    def answer(self, number: int, body: bytes = b"{}") -> None:
        _, on_done, _ = self.sent.pop(number)
        on_done(BatchResult([Answer(200, "application/json", body)]), None, 0.0)


class FakePool:
    def __init__(self, workers) -> None:
        self.workers = {w.id: w for w in workers}
        self.on_idle = lambda: None
        self.finished = 0

    def batch_finished(self, worker, succeeded) -> None:
        self.finished += 1


def _job(i: int) -> Job:
    return Job(Request(f"r{i}", []), asyncio.get_running_loop().create_future())


def test_a_burst_fills_the_slots_then_the_queue_then_is_refused_with_retry_after():
    async def run():
        workers = [FakeWorker("a"), FakeWorker("b")]
        lane = EngineLane(BatchQueue(3), FakePool(workers), max_sequences=2,
                          response_timeout=60)
        lane.start()
        jobs = [_job(i) for i in range(7)]
        for job in jobs:  # all at once: the lane's task never runs in between
            lane.submit(job)
        assert [w.in_flight for w in workers] == [2, 2] and len(lane.queue) == 3
        with pytest.raises(ServiceUnavailable) as refused:
            lane.submit(_job(99))
        assert refused.value.headers == {"Retry-After": "1"}
        workers[0].answer(1)  # a slot frees: the oldest queued request takes it
        await asyncio.sleep(0.01)
        assert jobs[0].future.result().status == 200
        assert workers[0].in_flight == 2 and len(lane.queue) == 2
        await lane.stop(ServiceUnavailable("stopping"), wait=0.0)

    asyncio.run(run())


def test_a_client_that_leaves_is_dropped_from_the_queue_or_cancelled_in_its_worker():
    async def run():
        worker = FakeWorker("a")
        lane = EngineLane(BatchQueue(5), FakePool([worker]), max_sequences=1,
                          response_timeout=60)
        lane.start()
        running, queued = _job(1), _job(2)
        lane.submit(running)
        lane.submit(queued)
        queued.abandon()
        await asyncio.sleep(0)
        assert len(lane.queue) == 0 and worker.cancelled == []
        running.abandon()
        await asyncio.sleep(0)
        assert worker.cancelled == [1]  # the engine stops it at its next step
        await lane.stop(ServiceUnavailable("stopping"), wait=0.0)

    asyncio.run(run())


def test_stored_jobs_take_slots_only_behind_online_requests():
    from tsf.batching.background import BackgroundJob

    async def run():
        worker = FakeWorker("a")
        lane = EngineLane(BatchQueue(5), FakePool([worker]), max_sequences=2,
                          response_timeout=60)
        lane.start()
        started = []
        stored = [BackgroundJob(Request(f"j{i}", []), asyncio.get_running_loop().create_future(),
                                on_start=lambda i=i: started.append(i)) for i in range(3)]
        online = [_job(i) for i in range(3)]
        lane.submit(online[0])
        lane.submit(online[1])
        lane.submit(online[2])  # queued: both slots are taken
        for job in stored:
            lane.submit_background(job, share=0.5)
        await asyncio.sleep(0.01)
        assert started == []  # an online request waits: no stored job goes
        worker.answer(1)
        await asyncio.sleep(0.01)
        assert started == [] and len(lane.queue) == 0  # the slot went to the online one
        worker.answer(2)
        await asyncio.sleep(0.01)
        assert started == [0]  # online requests run: job_share (1 of 2 slots) at most
        worker.answer(3)
        await asyncio.sleep(0.01)
        assert started == [0, 1]  # no online request left: stored jobs take every slot
        await lane.stop(ServiceUnavailable("stopping"), wait=0.0)
        assert isinstance(stored[2].future.exception(), ServiceUnavailable)

    asyncio.run(run())

"""The worker messages: their wire form, round trips through real frames, one raise_for_error,
and the batcher handing each job its answer."""

from __future__ import annotations

import asyncio

import pytest

from tsf.batching.batcher import Batcher
from tsf.batching.queue import BatchQueue, Job
from tsf.errors import BadRequest, ServiceUnavailable, TsfError
from tsf.serving.traffic import routing_key
from tsf.workers import protocol
from tsf.workers.messages import (DESCRIBE, TORCHSERVE_GRPC, Answer, Batch, BatchResult, Part,
                                  Request)


def through_frame(kind: int, header: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]:
    """What the other side reads: the frame encoded and decoded as the socket carries it."""
    _, head, *data = protocol.encode(kind, header, blobs)
    return protocol.decode(head, b"".join(data))


def tensor(name: str, data: bytes) -> Part:
    return Part(name, data, "application/x-tsf-tensor", datatype="INT32", shape=[1, 2],
                encoding="raw")


def test_a_plain_request_keeps_the_wire_form_it_always_had():
    request = Request("r1", [Part("body", b"{}", "application/json")], {"Accept": "*/*"})
    assert request.to_wire() == ({"id": "r1", "headers": {"Accept": "*/*"}, "parts": [
        {"name": "body", "ctype": "application/json"}]}, [b"{}"])


def test_fields_at_their_default_stay_off_the_wire_and_others_go_on_it():
    request = Request("r2", [Part("f", b"x", "image/png", "a.png"), tensor("t", b"\0" * 8)],
                      {}, {"k": "v"}, DESCRIBE, TORCHSERVE_GRPC)
    wire, blobs = request.to_wire()
    assert wire == {"id": "r2", "headers": {}, "params": {"k": "v"}, "kind": "describe",
                    "protocol": "torchserve-grpc", "parts": [
                        {"name": "f", "ctype": "image/png", "filename": "a.png"},
                        {"name": "t", "ctype": "application/x-tsf-tensor", "datatype": "INT32",
                         "shape": [1, 2], "encoding": "raw"}]}
    assert blobs == [b"x", b"\0" * 8]


def test_a_batch_round_trips_through_a_frame_each_request_with_its_own_blobs():
    batch = Batch([
        Request("a", [Part("body", b"first", "text/plain")], {"X-A": "1"}),
        Request("b", [], kind=DESCRIBE),
        Request("c", [tensor("x", b"12345678"), tensor("y", b"abcdefgh")], {}, {"p": "q"},
                protocol="oip"),
    ], stamps=True)
    header, blobs = through_frame(protocol.BATCH, *batch.to_wire())
    assert Batch.from_wire(header, blobs) == batch
    assert Batch.from_wire(*through_frame(protocol.BATCH, *Batch([]).to_wire())) == Batch([])


def test_decoding_does_not_copy_the_blobs():
    data = [b"one", b"two"]
    request = Request.from_wire({"id": "r", "parts": [{"name": "a"}, {"name": "b"}]}, data)
    assert request.parts[0].data is data[0] and request.parts[1].data is data[1]
    assert request.headers == {} and request.params == {} and request.parts[0].ctype == ""


def test_a_batch_result_round_trips_through_a_frame():
    result = BatchResult(
        [Answer(200, "application/json", b"[1]"),
         Answer(418, "text/plain", b"short", {"X-Pot": "tea"}),
         Answer(400, "application/json", b'{"code": 400}', error=True),
         Answer(200, "application/x-tsf-tensors", b"\0" * 8,
                tensors=[{"name": "y", "datatype": "FP32", "shape": [2], "size": 8}])],
        timings={"inference": 0.25}, metrics=[{"name": "m", "kind": "counter", "value": 1.0}],
        stamps=[["inference", 1, 2]])
    header, blobs = through_frame(protocol.RESULT, *result.to_wire())
    assert header["results"][0] == {"status": 200, "ctype": "application/json"}
    assert BatchResult.from_wire(header, blobs) == result
    bare = BatchResult([Answer(200, "text/plain", b"")])
    header, blobs = through_frame(protocol.RESULT, *bare.to_wire())
    assert "stamps" not in header and BatchResult.from_wire(header, blobs) == bare


def test_a_partial_answer_carries_its_index():
    partial = Answer(200, "text/plain", b"tok", index=3)
    header, blobs = through_frame(protocol.PARTIAL, *partial.to_wire())
    assert header["index"] == 3 and Answer.from_wire(header, blobs) == partial


def test_raise_for_error():
    Answer(200, "application/json", b"[]").raise_for_error()
    Answer(302, "text/plain", b"elsewhere").raise_for_error()
    sent = BadRequest("request r: bad input")
    with pytest.raises(BadRequest, match="bad input") as info:
        Answer(400, "application/json", b'{"code": 400, "type": "BadRequestException", '
               b'"message": "request r: bad input"}', error=True).raise_for_error()
    assert info.value.to_dict() == sent.to_dict()
    with pytest.raises(TsfError, match="short and stout") as info:
        Answer(418, "text/plain", b"short and stout").raise_for_error()
    assert info.value.status == 418
    with pytest.raises(TsfError, match="handler answered 503"):
        Answer(503, "text/plain", b"").raise_for_error()
    with pytest.raises(TsfError) as info:
        Answer(500, "application/octet-stream", b"\xff\xfe").raise_for_error()
    assert info.value.status == 500


def test_the_job_keeps_front_end_bookkeeping_off_the_message():
    async def main():
        request = Request("r", [], {"x-routing-key": "user-7"})
        job = Job(request, asyncio.get_running_loop().create_future(), label_version="2.0")
        assert routing_key(job.request.headers) == "user-7" and job.label_version == "2.0"
        assert routing_key(Request("s", []).headers) is None
        assert "label_version" not in request.to_wire()[0]
    asyncio.run(main())


class EchoWorker:
    """Streams one partial per request, then answers each with its body, through frames."""

    id = "w1"
    alive = True
    in_flight = 0

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def send_batch(self, batch: Batch, timeout: float, on_done, on_partial) -> None:
        batch = Batch.from_wire(*through_frame(protocol.BATCH, *batch.to_wire()))
        self.batches.append(batch)
        for index, request in enumerate(batch.requests):
            partial = Answer(200, "text/plain", b"partial-" + request.id.encode(), index=index)
            on_partial(Answer.from_wire(*through_frame(protocol.PARTIAL, *partial.to_wire())))
        result = BatchResult([Answer(200, "text/plain", r.parts[0].data) for r in batch.requests],
                             timings={"inference": 0.1})
        on_done(BatchResult.from_wire(*through_frame(protocol.RESULT, *result.to_wire())), None,
                0.0)
        return len(self.batches) - 1


class OneWorkerPool:
    def __init__(self, worker: EchoWorker) -> None:
        self.idle: asyncio.Queue = asyncio.Queue()
        self.idle.put_nowait(worker)

    @property
    def idle_count(self) -> int:
        return self.idle.qsize()

    async def acquire(self) -> EchoWorker:
        return await self.idle.get()

    def swap_for_idle(self, worker: EchoWorker) -> EchoWorker:
        return worker

    def release(self, worker: EchoWorker, succeeded: bool = True) -> None:
        self.idle.put_nowait(worker)

    def batch_finished(self, worker: EchoWorker, succeeded: bool) -> None:
        pass


class RecordingObserver:
    def __init__(self) -> None:
        self.done: list[tuple[list[Job], BatchResult]] = []

    def batch_done(self, batch, result, dispatched, finished, worker_id) -> None:
        self.done.append((batch, result))

    def abandoned(self, stage: str) -> None:
        pass


def test_the_batcher_hands_each_job_its_answer_and_partials():
    async def main():
        loop = asyncio.get_running_loop()
        worker = EchoWorker()
        observer = RecordingObserver()
        batcher = Batcher(BatchQueue(10), OneWorkerPool(worker), batch_size=2,
                          max_batch_delay_ms=200, response_timeout=10, observer=observer)
        batcher.start()
        partials: dict[str, list[bytes]] = {"a": [], "b": []}
        jobs = []
        for name in ("a", "b"):
            job = Job(Request(name, [Part("body", name.encode() * 3)], kind="explain"),
                      loop.create_future())
            job.on_partial = lambda answer, name=name: partials[name].append(answer.body)
            batcher.submit(job)
            jobs.append(job)
        answers = await asyncio.gather(*(job.future for job in jobs))
        await batcher.stop(ServiceUnavailable("test over"))
        return worker, observer.done, jobs, answers, partials

    worker, done, jobs, answers, partials = asyncio.run(main())
    assert [len(b.requests) for b in worker.batches] == [2]
    assert [r.kind for r in worker.batches[0].requests] == ["explain", "explain"]
    assert answers == [Answer(200, "text/plain", b"aaa"), Answer(200, "text/plain", b"bbb")]
    assert partials == {"a": [b"partial-a"], "b": [b"partial-b"]}
    [(batch_jobs, result)] = done
    assert batch_jobs == jobs and result.timings == {"inference": 0.1}

"""Reading batches ahead: a handler with ``prepare_request`` has each batch's requests prepared
in the worker's threads as the batch arrives, while the batch before it still runs; the stage
finds the results (or the request's own error) in ``context.batch_state``."""

from __future__ import annotations

import socket
import threading

from tsf import hookimpl
from tsf.errors import BadRequest
from tsf.handler import prepared
from tsf.runtime.main import Inbox
from tsf.runtime.read_ahead import ReadAhead, prepare_threads
from tsf.testing import HandlerHarness
from tsf.workers import protocol
from tsf.workers.messages import Batch, Part, Request


def _batch(*bodies: str) -> Batch:
    return Batch([Request(f"id-{b}", [Part("body", b.encode(), "text/plain")]) for b in bodies])


class Preparing:
    """Upper-cases each body in ``prepare_request``; the first batch's inference waits until
    the second batch's requests are being prepared (so it proves the overlap, or times out)."""

    prepare_threads = 2

    def __init__(self) -> None:
        self.second_batch_prepared = threading.Event()
        self.threads: set[str] = set()
        self.overlapped: list[bool] = []

    def prepare_request(self, request: dict, request_id: str) -> str:
        self.threads.add(threading.current_thread().name)
        if request["body"] == "bad":
            raise BadRequest(f"request {request_id}: bad body")
        if request["body"].startswith("second"):
            self.second_batch_prepared.set()
        return request["body"].upper()

    @hookimpl
    def tsf_load_model(self, context):
        return object()

    @hookimpl
    def tsf_preprocess(self, context, requests):
        return [prepared(context, i).result() for i in range(len(requests))]

    @hookimpl
    def tsf_inference(self, context, batch):
        if batch and batch[0].startswith("FIRST"):
            self.overlapped.append(self.second_batch_prepared.wait(10))
        return batch

    @hookimpl
    def tsf_postprocess(self, context, outputs):
        return outputs


def test_the_next_batch_is_prepared_while_the_one_before_runs(tmp_path):
    handler = Preparing()
    runner = HandlerHarness(tmp_path, handler).runner
    assert runner.preparer is not None
    front, worker = socket.socketpair()
    with front, worker:
        inbox = ReadAhead(Inbox(worker), runner.prepare)
        protocol.send_frame(front, protocol.BATCH, *_batch("first-a", "first-b").to_wire())
        number, batch, skip = inbox.next_batch()
        # the second batch arrives while the first one runs, as the front end pipelines them
        protocol.send_frame(front, protocol.BATCH, *_batch("second-a", "bad").to_wire())
        first = runner.run(batch, skip)
        number2, batch2, _ = inbox.next_batch()
        second = runner.run(batch2)
    assert handler.overlapped == [True]
    assert (number, number2) == (0, 1)
    assert [a.body for a in first.answers] == [b"FIRST-A", b"FIRST-B"]
    # a request whose preparation failed fails alone, with its own message
    assert second.answers[0].body == b"SECOND-A"
    assert second.answers[1].status == 400 and b"request id-bad: bad body" in second.answers[1].body
    assert handler.threads and all(t.startswith("tsf-prepare") for t in handler.threads)


def test_without_read_ahead_a_batch_is_still_prepared_in_the_threads(tmp_path):
    handler = Preparing()
    result = HandlerHarness(tmp_path, handler).runner.run(_batch("x", "y"))
    assert [a.body for a in result.answers] == [b"X", b"Y"]
    assert all(t.startswith("tsf-prepare") for t in handler.threads)


def test_the_inbox_reports_the_end_of_the_socket(tmp_path):
    front, worker = socket.socketpair()
    with worker:
        inbox = ReadAhead(Inbox(worker), lambda batch: None)
        protocol.send_frame(front, protocol.BATCH, *_batch("a").to_wire())
        protocol.send_frame(front, protocol.CANCEL, {"batch": 1, "index": 0})
        protocol.send_frame(front, protocol.BATCH, *_batch("b").to_wire())
        front.close()
        assert inbox.next_batch()[0] == 0
        assert inbox.next_batch()[2] == {0}  # the cancel applies to the batch not begun
        try:
            inbox.next_batch()
        except EOFError:
            pass
        else:
            raise AssertionError("expected EOFError once the front end closed its end")


def test_prepare_threads_follow_the_worker_threads(monkeypatch):
    class Plain:
        pass

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert prepare_threads(Plain()) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert prepare_threads(Plain()) == 1
    assert prepare_threads(Preparing()) == 2

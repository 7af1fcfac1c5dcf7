"""The worker's inbox: batches in the order sent, and cancellations of requests whose batch has
not begun, read through a real socket pair; the runner answers a skipped request with
ClientGone without running it."""

from __future__ import annotations

import socket

from tsf import hookimpl
from tsf.handler import BaseHandler
from tsf.runtime.main import Inbox
from tsf.testing import HandlerHarness
from tsf.workers import protocol
from tsf.workers.messages import Batch, Part, Request


def _batch(*ids: str) -> Batch:
    return Batch([Request(i, [Part("body", i.encode(), "text/plain")]) for i in ids])


def _send(sock: socket.socket, kind: int, header: dict, blobs=()) -> None:
    protocol.send_frame(sock, kind, header, blobs)


def test_batches_come_in_order_with_the_requests_cancelled_before_they_began():
    front, worker = socket.socketpair()
    with front, worker:
        inbox = Inbox(worker)
        _send(front, protocol.BATCH, *_batch("a", "b").to_wire())
        _send(front, protocol.BATCH, *_batch("c", "d").to_wire())
        _send(front, protocol.CANCEL, {"batch": 1, "index": 1})
        number, batch, skip = inbox.next_batch()
        assert number == 0 and [r.id for r in batch.requests] == ["a", "b"] and skip == set()
        number, batch, skip = inbox.next_batch()
        assert number == 1 and [r.id for r in batch.requests] == ["c", "d"] and skip == {1}
        # a cancel for a batch already begun changes nothing and is forgotten
        _send(front, protocol.CANCEL, {"batch": 1, "index": 0})
        _send(front, protocol.BATCH, *_batch("e").to_wire())
        number, batch, skip = inbox.next_batch()
        assert number == 2 and skip == set() and inbox.cancelled == set()


def test_a_cancel_that_arrives_while_the_batch_before_runs_is_applied():
    front, worker = socket.socketpair()
    with front, worker:
        inbox = Inbox(worker)
        _send(front, protocol.BATCH, *_batch("a").to_wire())
        assert inbox.next_batch()[0] == 0  # begun; meanwhile the next batch and its cancel
        _send(front, protocol.BATCH, *_batch("b", "c").to_wire())
        _send(front, protocol.CANCEL, {"batch": 1, "index": 0})
        assert inbox.next_batch()[1:] == (_batch("b", "c"), {0})


class Recorder(BaseHandler):
    """Answers each request with its body, recording the bodies of each batch it runs."""

    def __init__(self) -> None:
        self.seen: list[list] = []

    @hookimpl
    def tsf_load_model(self, context):
        return object()

    @hookimpl
    def tsf_preprocess(self, context, requests):
        self.seen.append([row["body"] for row in requests])
        return [row["body"] for row in requests]

    @hookimpl
    def tsf_inference(self, context, batch):
        return batch

    @hookimpl
    def tsf_postprocess(self, context, outputs):
        return outputs


def test_the_runner_answers_a_skipped_request_without_running_it(tmp_path):
    handler = Recorder()
    runner = HandlerHarness(tmp_path, handler).runner
    result = runner.run(_batch("x", "y", "z"), skip={1})
    assert handler.seen == [["x", "z"]]
    assert [a.status for a in result.answers] == [200, 499, 200]
    assert result.answers[1].error and b"went away" in result.answers[1].body
    assert [a.body for a in result.answers[::2]] == [b"x", b"z"]
    everything_skipped = runner.run(_batch("p"), skip={0})
    assert handler.seen == [["x", "z"]] and everything_skipped.answers[0].status == 499

"""The DAG executor in-process, with a fake model manager answering each node's jobs."""

from __future__ import annotations

import asyncio
import json

import pytest

from tsf.batching.queue import Job
from tsf.errors import BadRequest, ServiceUnavailable
from tsf.telemetry.tracing import Tracing
from tsf.workers.messages import Answer, Part, Request
from tsf.workflows.executor import NodeFailed, WorkflowRun
from tsf.workflows.spec import parse_spec


class FakeModels:
    """Answers a node's job with ``answer(node, request)``: (ctype, bytes) or an error."""

    def __init__(self, answer, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.calls: list[tuple[str, Request]] = []
        self.jobs: dict[str, Job] = {}

    def submit(self, model: str, request: Request, span) -> Job:
        node = model.split("__", 1)[1]
        self.calls.append((node, request))
        job = Job(request, asyncio.get_running_loop().create_future())
        self.jobs[node] = job
        asyncio.get_running_loop().call_later(self.delay, self._settle, node, job)
        return job

    def _settle(self, node: str, job: Job) -> None:
        if job.future.done():
            return
        try:
            ctype, body = self.answer(node, job.request)
        except Exception as exc:
            job.future.set_exception(exc)
            return
        job.future.set_result(Answer(200, ctype, body))


def run(spec_doc: dict, functions: set[str], models: FakeModels, body: bytes = b"[1]"):
    spec = parse_spec(spec_doc, functions)
    seen: list[tuple[str, int]] = []
    flow = WorkflowRun("wf", spec, models.submit, tracing=Tracing(), span=None,
                       observe=lambda node, seconds, status: seen.append((node, status)))
    request = Request("r1", [Part("body", body, "application/json")], params={"a": "1"})
    return asyncio.run(flow.run(request)), seen


def test_values_flow_as_json_text_and_bytes_and_leaves_merge():
    def answer(node, request):
        if node == "pre":
            assert request.params == {"a": "1"}
            assert [p.data for p in request.parts] == [b"[1]"]
            return "application/json", b'{"x": 1}'
        if node == "text":
            assert request.parts == [Part("body", b'{"x": 1}', "application/json")]
            assert request.params == {} and request.id == "r1"
            return "text/plain; charset=utf-8", "h\u00e9".encode()
        assert node == "raw"
        return "application/octet-stream", b"\xff\x00"

    doc = {"dag": {"pre": ["text", "raw"]}}
    answer, seen = run(doc, {"pre", "text", "raw"}, FakeModels(answer))
    assert answer.ctype == "application/json"
    assert json.loads(answer.body) == {"text": "h\u00e9", "raw": "/wA="}
    assert sorted(seen) == [("pre", 200), ("raw", 200), ("text", 200)]


def test_a_join_gets_one_part_per_parent():
    def answer(node, request):
        if node == "join":
            a, b = request.parts
            assert (a.name, b.name) == ("a", "b")
            assert (a.ctype, b.ctype) == ("application/json", "image/png")
            return "application/json", json.dumps([json.loads(a.data), len(b.data)]).encode()
        return ("application/json", b"7") if node == "a" else ("image/png", b"12345")

    doc = {"dag": {"pre": ["a", "b"], "a": ["join"], "b": ["join"]}}
    answer, _ = run(doc, {"pre", "a", "b", "join"}, FakeModels(answer))
    assert json.loads(answer.body) == [7, 5]


def test_transient_errors_are_retried_and_others_fail_naming_the_node():
    attempts = []

    def flaky(node, request):
        attempts.append(node)
        if node == "m" and attempts.count("m") == 1:
            raise ServiceUnavailable("worker died")
        return "application/json", b"1"

    doc = {"models": {"retry-attempts": 1, "m": {"url": "m.mar"}}, "dag": {"pre": ["m"]}}
    answer, seen = run(doc, {"pre"}, FakeModels(flaky))
    assert attempts == ["pre", "m", "m"] and answer.body == b"1"
    assert ("m", 503) in seen and ("m", 200) in seen

    def bad_answer(node, request):
        if node == "m":
            raise BadRequest("numbers must be numbers")
        return "application/json", b"1"

    with pytest.raises(NodeFailed, match="workflow wf: node m failed: numbers must be") as info:
        run(doc, {"pre"}, FakeModels(bad_answer))
    assert info.value.status == 400 and info.value.type == "BadRequestException"


class NeverAnswers(FakeModels):
    """Leaves the ``slow`` node's job waiting forever."""

    def _settle(self, node: str, job: Job) -> None:
        if node != "slow":
            super()._settle(node, job)


def test_a_failing_branch_cancels_the_nodes_still_waiting():
    def answer(node, request):
        if node == "fast":
            raise BadRequest("fast branch failed")
        return "application/json", b"1"

    models = NeverAnswers(answer)
    doc = {"dag": {"pre": ["fast", "slow"], "fast": ["end"], "slow": ["end"]}}
    with pytest.raises(NodeFailed, match="node fast"):
        run(doc, {"pre", "fast", "slow", "end"}, models)
    assert models.jobs["slow"].future.cancelled()
    assert "end" not in models.jobs

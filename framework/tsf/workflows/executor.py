"""Running one request through a workflow's DAG.

Every node, model or function, is a tsf model version (``{workflow}__{node}``), so it goes
through that model's queue, batching and worker processes.  A node runs as soon as every node
feeding it has answered; parallel branches run at the same time.

Values between nodes: an answer is sent on with its content type, so the next node's worker
decodes it as it decodes a client's request: JSON as a value, text as ``str``, anything else as
``bytes`` (the front end parses none of it).  A node fed by one node receives it as the request's ``body``; a node
fed by several receives one part per parent, named after it (``row["m1"]``, ``row["m2"]``, as
TorchServe's aggregate functions read them).  The start node receives the client's request as
``/predictions`` would.  The answer is the leaf node's, as it sent it; with several leaves it is
a JSON object ``{leaf: value}``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from typing import Any, Callable

from ..batching.queue import Job
from ..errors import TsfError
from ..json_body import load_json
from ..workers.messages import Answer, Part, Request
from .spec import WorkflowSpec

RETRIED_STATUSES = (503, 504)  # a worker died, was restarting or timed out: worth a retry
Submit = Callable[[str, Request, Any], Job]


def node_model_name(workflow: str, node: str) -> str:
    """The model name a workflow's node is registered under."""
    return f"{workflow}__{node}"


def decode_answer(answer: Answer) -> Any:
    """A node's answer as a value: JSON decoded, text as str, anything else bytes."""
    payload = answer.body
    media = answer.ctype.split(";", 1)[0].strip().lower()
    if media == "application/json":
        return load_json(payload, "a node's answer")
    if media.startswith("text/"):
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return payload
    return payload


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    return value


class NodeFailed(TsfError):
    """A node answered an error; keeps its status and type, and names the node."""


class WorkflowRun:
    """One request's pass through the DAG."""

    def __init__(self, workflow: str, spec: WorkflowSpec, submit: Submit, *,
                 tracing: Any, span: Any, observe: Callable[[str, float, int], None]) -> None:
        self.workflow = workflow
        self.spec = spec
        self.submit = submit
        self.tracing = tracing
        self.span = span
        self.observe = observe  # (node, seconds, status) for the node latency metric
        self._tasks: dict[str, asyncio.Task] = {}
        self._request = Request("", [])

    async def run(self, request: Request) -> Answer:
        self._request = request
        try:
            leaves = self.spec.leaves
            answers = await asyncio.gather(*(self._result(leaf) for leaf in leaves))
        finally:
            for task in self._tasks.values():
                task.cancel()
        if len(leaves) == 1:
            return answers[0]
        merged = {leaf: _jsonable(decode_answer(answer)) for leaf, answer in
                  zip(leaves, answers)}
        return Answer(200, "application/json", json.dumps(merged).encode())

    def _result(self, node: str) -> asyncio.Task:
        task = self._tasks.get(node)
        if task is None:
            task = self._tasks[node] = asyncio.ensure_future(self._run_node(node))
        return task

    async def _inputs(self, node: str) -> Request:
        request = self._request
        parents = self.spec.parents[node]
        if not parents:
            return request
        answers = await asyncio.gather(*(self._result(p) for p in parents))
        names = ["body"] if len(parents) == 1 else parents
        # sent on with its content type, so the worker decodes it as the node answered it
        parts = [Part(name, answer.body, answer.ctype or "application/octet-stream")
                 for name, answer in zip(names, answers)]
        return dataclasses.replace(request, parts=parts, params={})

    async def _run_node(self, node: str) -> Answer:
        request = await self._inputs(node)
        tries = 1 + self.spec.nodes[node].settings.retry_attempts
        for attempt in range(tries):
            try:
                return await self._call(node, request)
            except NodeFailed as exc:
                if exc.status not in RETRIED_STATUSES or attempt + 1 == tries:
                    raise
        raise AssertionError("unreachable")

    async def _call(self, node: str, request: Request) -> Answer:
        span = self.tracing.start_node(self.span, self.workflow, node)
        started, status = time.perf_counter(), 500
        try:
            job = self.submit(node_model_name(self.workflow, node), request, span)
            answer = await job.future
            answer.raise_for_error()
            status = answer.status
            return answer
        except TsfError as exc:
            status = exc.status
            raise NodeFailed(f"workflow {self.workflow}: node {node} failed: {exc.message}",
                             status=exc.status, type=exc.type) from None
        finally:
            self.observe(node, time.perf_counter() - started, status)
            self.tracing.end_node(span, status)

"""Workflow routes: ``/workflows`` on the management API, ``/wfpredict/{w}`` on inference.

Parameters and response shapes follow TorchServe's workflow APIs.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from ..errors import TsfError, check_response_size
from ..workers.messages import Request
from ..workflows.manager import WorkflowManager
from .management import ManagementHandler
from .jobs import prefers_async, submit_job
from .model_request import ModelRequestHandler
from .request_body import request_parts


class WorkflowManagementHandler(ManagementHandler):
    @property
    def workflows(self) -> WorkflowManager:
        return self.services.workflows


class WorkflowsHandler(WorkflowManagementHandler):
    """``GET /workflows`` (paged list) and ``POST /workflows?url=...`` (register)."""

    def get(self) -> None:
        self.write_json(self.workflows.list(*self.page()))

    async def post(self) -> None:
        self.services.dataplane.check_model_api()
        message = await self.workflows.register(self.arg("url"), self.arg("workflow_name"))
        self.status(200, message)


class WorkflowHandler(WorkflowManagementHandler):
    """``GET /workflows/{w}`` (describe) and ``DELETE /workflows/{w}`` (unregister)."""

    def get(self, name: str) -> None:
        self.write_json([self.workflows.get(name).describe()])

    async def delete(self, name: str) -> None:
        self.services.dataplane.check_model_api()
        self.status(200, await self.workflows.unregister(name))


class WorkflowPredictHandler(ModelRequestHandler):
    """``POST /wfpredict/{workflow}``: the request goes through the workflow's DAG."""

    route = "/wfpredict/{workflow_name}"

    async def post(self, name: str) -> None:
        if prefers_async(self.request.headers.get("Prefer")):
            await submit_job(self, name, None)  # a job of the workflow (docs/jobs.md)
            return
        workflows = self.services.workflows
        started, code = time.perf_counter(), 500
        tracing = self.services.tracing
        span = None
        if tracing.enabled:
            span = tracing.start_request(self.request, self.route, name)
            self.trace_id = tracing.trace_id(span)
            self.set_header("X-Trace-Id", self.trace_id)
        try:
            message = request_parts(self.request, self.body())
            self.request_id = message.id
            answer = await workflows.predict(name, message,
                                             functools.partial(self._submit, name), span)
            check_response_size(len(answer.body), self.services.config.max_response_size)
            code = answer.status
            self.set_status(code)
            self.set_header("Content-Type", answer.ctype)
            self.set_header("X-Request-Id", message.id)
            self.finish(answer.body)
        except TsfError as exc:
            code = exc.status
            raise
        finally:
            if span is not None:
                tracing.end_request(span, code)
            if name in workflows.workflows:
                workflows.requests.labels(name, str(code)).inc()
                workflows.request_seconds.labels(name).observe(time.perf_counter() - started)

    def _submit(self, workflow: str, model: str, request: Request, span: Any) -> Any:
        return self.submit(model, None, request, span, workflow)[1]

    put = post


def management_routes(options: dict[str, Any]) -> list:
    return [(r"/workflows", WorkflowsHandler, options),
            (r"/workflows/([^/]+)", WorkflowHandler, options)]


def inference_routes(options: dict[str, Any]) -> list:
    return [(r"/wfpredict/([^/]+)", WorkflowPredictHandler, options)]

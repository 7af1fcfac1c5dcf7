"""Inference API (port 8080): ``/ping``, ``/predictions``, ``/explanations``, OpenAPI."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..errors import TsfError, check_response_size
from ..workers.messages import Answer
from .api_handler import ApiHandler
from .jobs import prefers_async, submit_job
from .model_request import ModelRequestHandler
from .openapi import InferenceOpenAPIHandler
from .request_body import request_parts

log = logging.getLogger("tsf.http")


class PingHandler(ApiHandler):
    """Health by the rule in :mod:`tsf.serving.health`: 200 Healthy or Degraded, 503 Unhealthy.

    ``?verbose=true`` adds each model version's state and worker counts.
    """

    public = True

    def get(self) -> None:
        if self.services.dataplane.draining:
            self.write_json({"status": "Draining", "code": 503,
                             "type": "ServiceUnavailableException",
                             "message": "the server is draining before it stops"}, status=503)
            return
        report = self.services.dataplane.health_report()
        body: dict[str, Any] = {"status": report.status}
        problems = report.problems()
        if not report.ok:
            body.update(code=503, type="ServiceUnavailableException")
        if problems:
            body["message"] = "; ".join(problems)
        if self.get_query_argument("verbose", "false").lower() in ("true", "1", "yes"):
            body["models"] = [m.to_dict() for m in report.models]
            body["failedStartupModels"] = report.failed_startup_models
        self.write_json(body, status=200 if report.ok else 503)


class PredictionHandler(ModelRequestHandler):
    """``POST /predictions/{model}[/{version}]`` (and explanations, with ``kind``).

    A handler that streams (``context.send_intermediate_predict_response``) gets an HTTP/1.1
    chunked answer as TorchServe gives it: the first intermediate answer sends the head (its
    status, content type and headers, plus ``ts_stream_next: true``), each answer is flushed as
    a chunk when it arrives, the final answer is the last chunk.
    """

    kind = "predict"
    route = "/predictions/{model_name}"
    streaming = False  # an intermediate answer went out: the answer is a chunked stream
    streamed = 0  # bytes sent as intermediate answers
    stream_status = 200
    stream_broken = False  # the client went away mid-stream

    async def post(self, model: str, version: str | None = None) -> None:
        if prefers_async(self.request.headers.get("Prefer")):
            await submit_job(self, model, version, self.kind)
            return
        route = self.route + ("/{model_version}" if version else "")
        with self.observed(route, model, self.kind, version or "default") as outcome:
            message = request_parts(self.request, self.body(), self.kind)
            self.request_id = message.id
            outcome.model_version, job = self.submit(model, version, message, outcome.span)
            job.on_partial = self.send_partial
            try:
                answer = await job.future
            except TsfError as error:
                if not self.streaming:
                    raise
                outcome.code = error.status  # too late for a status: the error is the last chunk
                self.finish(json.dumps(error.to_dict()))
                return
            outcome.code = self.stream_status if self.streaming else answer.status
            self.respond(message.id, answer)
            if not self.streaming and answer.status < 400 and self.kind == "predict":
                self.capture(outcome.model_version, message.id, answer.ctype, answer.body,
                             "torchserve")

    def send_partial(self, answer: Answer) -> None:
        """Flush one intermediate answer as a chunk (the first one with the head)."""
        if self.stream_broken:
            return
        payload = answer.body
        limit = self.services.config.max_response_size
        if self.streamed + len(payload) > limit:
            log.warning("request %s: streamed answer exceeds max_response_size (%d bytes); "
                        "closing the connection", self.request_id, limit)
            self.stream_broken = True
            self.request.connection.close()
            return
        if not self.streaming:
            self.streaming = True
            self.stream_status = answer.status
            self._head(self.request_id, answer)
            self.set_header("ts_stream_next", "true")
        self.streamed += len(payload)
        self.write(payload)
        self.flush().add_done_callback(self._flushed)

    def _flushed(self, future: "asyncio.Future[None]") -> None:
        if future.exception() is not None:
            self.stream_broken = True

    def _head(self, request_id: str, answer: Answer) -> None:
        self.set_status(answer.status)
        self.set_header("Content-Type", answer.ctype)
        self.set_header("X-Request-Id", request_id)
        for key, value in answer.headers.items():
            self.set_header(key, value)

    def respond(self, request_id: str, answer: Answer) -> None:
        limit = self.services.config.max_response_size
        payload = answer.body
        if self.streaming:  # the head went with the first chunk; this is the last one
            if self.streamed + len(payload) > limit:
                self.request.connection.close()
                return
            self.finish(payload)
            return
        check_response_size(len(payload), limit)
        self._head(request_id, answer)
        self.finish(payload)

    put = post


class ExplanationHandler(PredictionHandler):
    kind = "explain"
    route = "/explanations/{model_name}"


def routes(options: dict[str, Any]) -> list:
    name = r"([^/]+)"
    return [
        (r"/ping", PingHandler, options),
        (rf"/predictions/{name}", PredictionHandler, options),
        (rf"/predictions/{name}/{name}", PredictionHandler, options),
        (rf"/explanations/{name}", ExplanationHandler, options),
        (rf"/explanations/{name}/{name}", ExplanationHandler, options),
        (r"/(?:api-description)?", InferenceOpenAPIHandler, options),
    ]

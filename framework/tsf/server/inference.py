"""Inference API (port 8080): ``/ping``, ``/predictions``, ``/explanations``, OpenAPI."""

from __future__ import annotations

from typing import Any

from ..errors import check_response_size
from .openapi import InferenceOpenAPIHandler
from .request_body import StreamingBodyHandler, request_parts


class PingHandler(StreamingBodyHandler):
    """Health by the rule in :mod:`tsf.health`: 200 Healthy or Degraded, 503 Unhealthy.

    ``?verbose=true`` adds each model version's state and worker counts.
    """

    public = True

    def get(self) -> None:
        if self.draining:
            self.write_json({"status": "Draining", "code": 503,
                             "type": "ServiceUnavailableException",
                             "message": "the server is draining before it stops"}, status=503)
            return
        report = self.services["manager"].health_report()
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


class PredictionHandler(StreamingBodyHandler):
    """``POST /predictions/{model}[/{version}]`` (and explanations, with ``kind``)."""

    kind = "predict"
    route = "/predictions/{model_name}"

    async def post(self, model: str, version: str | None = None) -> None:
        route = self.route + ("/{model_version}" if version else "")
        with self.observed(route, model, self.kind, version or "default") as outcome:
            meta, blobs = request_parts(self.request, self.body())
            self.request_id = meta["id"]
            outcome.model_version, job = self.submit(model, version, self.kind, meta, blobs,
                                                     outcome.span)
            result, payload = await job.future
            outcome.code = result["status"]
            self.respond(meta["id"], result, payload)

    def respond(self, request_id: str, result: dict, payload: bytes) -> None:
        check_response_size(len(payload), self.services["config"].max_response_size)
        self.set_status(result["status"])
        self.set_header("Content-Type", result["ctype"])
        self.set_header("X-Request-Id", request_id)
        for key, value in result.get("headers", {}).items():
            self.set_header(key, value)
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

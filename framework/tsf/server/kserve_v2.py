"""KServe v2 / Open Inference Protocol over HTTP on the inference port.

``/v2`` (server metadata), ``/v2/health/live|ready`` (never behind the token),
``/v2/models/{m}[/versions/{v}]`` (model metadata), ``.../ready`` and ``.../infer`` with JSON
tensors or the binary tensor extension (``Inference-Header-Content-Length``).  Readiness is
answered 200 for true and 503 for false.  Errors carry OIP's ``error`` beside tsf's
``code``/``type``/``message``.
"""

from __future__ import annotations

from typing import Any

from ..dataplane import derive_request_id, server_metadata
from ..errors import ServiceUnavailable, TsfError, check_response_size
from ..oip.requests import http_reply, outputs_of, parse_http
from .api_handler import ApiHandler
from .model_request import ModelRequestHandler
from .request_body import query_params

HEADER_LENGTH = "Inference-Header-Content-Length"


class OipErrors:
    """Mixed into the v2 routes: OIP's ``error`` key in error bodies."""

    def error_document(self, error: TsfError) -> dict:
        return dict(error.to_dict(), error=error.message)


class OipHandler(OipErrors, ApiHandler):
    """A v2 route that takes no body: metadata, liveness, readiness."""


class ServerMetadataHandler(OipHandler):
    def get(self) -> None:
        self.write_json(server_metadata())


class LiveHandler(OipHandler):
    public = True

    def get(self) -> None:
        self.write_json({"live": True})


class ReadyHandler(OipHandler):
    """Ready exactly when ``/ping`` answers 200 (Healthy or Degraded)."""

    public = True

    def get(self) -> None:
        ready, problems = self.services.dataplane.ready()
        if not ready:
            raise ServiceUnavailable("; ".join(problems))
        self.write_json({"ready": True})


class ModelMetadataHandler(OipHandler):
    def get(self, name: str, version: str | None = None) -> None:
        self.write_json(self.services.dataplane.model_metadata(name, version))


class ModelReadyHandler(OipHandler):
    def get(self, name: str, version: str | None = None) -> None:
        if not self.services.dataplane.model_ready(name, version):
            raise ServiceUnavailable(f"model {name} has no worker that can serve")
        self.write_json({"name": name, "ready": True})


class InferHandler(OipErrors, ModelRequestHandler):
    """``POST /v2/models/{m}[/versions/{v}]/infer``."""

    async def post(self, name: str, version: str | None = None) -> None:
        route = "/v2/models/{model_name}" + ("/versions/{model_version}" if version else "") + \
            "/infer"
        with self.observed(route, name, "predict", version or "default") as outcome:
            request = parse_http(self.body(), self.request.headers.get(HEADER_LENGTH))
            request_id = derive_request_id(self.request.headers.get("X-Request-Id"), request.id)
            self.request_id = request_id
            message = request.message(request_id, dict(self.request.headers.get_all()),
                                      query_params(self.request))
            outcome.model_version, job = self.submit(name, version, message, outcome.span)
            outputs = outputs_of(await job.future, request)
            mv = outcome.model_version
            body, header_length = http_reply(mv.name, mv.version, request, outputs)
            check_response_size(len(body), self.services.config.max_response_size)
            outcome.code = 200
            self.set_header("X-Request-Id", request_id)
            ctype = "application/json" if header_length is None else "application/octet-stream"
            self.set_header("Content-Type", ctype)
            if header_length is not None:
                self.set_header(HEADER_LENGTH, str(header_length))
            self.finish(body)
            self.capture(mv, request_id, ctype, body, "oip")


def routes(options: dict[str, Any]) -> list:
    model = r"/v2/models/([^/]+)(?:/versions/([^/]+))?"
    return [
        (r"/v2/?", ServerMetadataHandler, options),
        (r"/v2/health/live", LiveHandler, options),
        (r"/v2/health/ready", ReadyHandler, options),
        (model + r"/?", ModelMetadataHandler, options),
        (model + r"/ready", ModelReadyHandler, options),
        (model + r"/infer", InferHandler, options),
    ]

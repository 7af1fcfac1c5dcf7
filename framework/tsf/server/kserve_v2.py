"""KServe v2 / Open Inference Protocol over HTTP on the inference port.

``/v2`` (server metadata), ``/v2/health/live|ready`` (never behind the token),
``/v2/models/{m}[/versions/{v}]`` (model metadata), ``.../ready`` and ``.../infer`` with JSON
tensors or the binary tensor extension (``Inference-Header-Content-Length``).  Readiness is
answered 200 for true and 503 for false.  Errors carry OIP's ``error`` beside tsf's
``code``/``type``/``message``.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..errors import ServiceUnavailable, TsfError, check_response_size
from ..manager import ModelManager
from ..oip.requests import http_reply, outputs_of, parse_http, tensor_metadata
from ..request_id import new_request_id
from .request_body import StreamingBodyHandler, query_params

EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"


def server_metadata() -> dict:
    return {"name": "tsf", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(manager: ModelManager, name: str, version: str | None) -> dict:
    mv = manager.registry.get(name, version)
    signature = mv.signature()
    return {"name": mv.name, "versions": [v.version for v in manager.registry.versions(name)],
            "platform": "pytorch", "inputs": tensor_metadata(signature.get("inputs")),
            "outputs": tensor_metadata(signature.get("outputs"))}


def model_ready(manager: ModelManager, name: str, version: str | None) -> bool:
    return manager.registry.get(name, version).ready


class OipHandler(StreamingBodyHandler):
    """Shared by the v2 routes: OIP's ``error`` key in error bodies."""

    def error_document(self, error: TsfError) -> dict:
        return dict(error.to_dict(), error=error.message)


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
        if self.draining:
            raise ServiceUnavailable("the server is draining before it stops")
        healthy, problems = self.services["manager"].health()
        if not healthy:
            raise ServiceUnavailable("; ".join(problems))
        self.write_json({"ready": True})


class ModelMetadataHandler(OipHandler):
    def get(self, name: str, version: str | None = None) -> None:
        self.write_json(model_metadata(self.services["manager"], name, version))


class ModelReadyHandler(OipHandler):
    def get(self, name: str, version: str | None = None) -> None:
        if not model_ready(self.services["manager"], name, version):
            raise ServiceUnavailable(f"model {name} has no worker that can serve")
        self.write_json({"name": name, "ready": True})


class InferHandler(OipHandler):
    """``POST /v2/models/{m}[/versions/{v}]/infer``."""

    async def post(self, name: str, version: str | None = None) -> None:
        route = "/v2/models/{model_name}" + ("/versions/{model_version}" if version else "") + \
            "/infer"
        with self.observed(route, name, "predict", version or "default") as outcome:
            request = parse_http(self.body(), self.request.headers.get(HEADER_LENGTH))
            request_id = self.request.headers.get("X-Request-Id") or request.id or \
                new_request_id()
            self.request_id = request_id
            meta = request.meta(request_id, dict(self.request.headers.get_all()),
                                query_params(self.request))
            outcome.model_version, job = self.submit(name, version, "predict", meta,
                                                     request.blobs, outcome.span)
            outputs = outputs_of(await job.future, request)
            mv = outcome.model_version
            body, header_length = http_reply(mv.name, mv.version, request, outputs)
            check_response_size(len(body), self.services["config"].max_response_size)
            outcome.code = 200
            self.set_header("X-Request-Id", request_id)
            if header_length is None:
                self.set_header("Content-Type", "application/json")
            else:
                self.set_header("Content-Type", "application/octet-stream")
                self.set_header(HEADER_LENGTH, str(header_length))
            self.finish(body)


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

"""KServe v1 protocol on the inference port: ``/v1/models/{m}[:predict|:explain]``.

``{"instances": [...]}`` becomes one queued request per instance (so instances are batched with
other traffic); the answer is ``{"predictions": [...]}`` or ``{"explanations": [...]}`` in the
same order.  Each instance reaches the handler as a JSON body, as TorchServe's KServe wrapper
passes it (``{"data": <base64 image>}``, ``{"text": ...}``, a list of numbers).  A binary
result (a PNG heatmap) is returned as ``{"b64": ...}``.  If any instance fails, the request
fails with that instance's error.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from ..dataplane import derive_request_id
from ..errors import BadRequest, ResourceNotFound, check_response_size
from ..json_body import load_json
from ..workers.messages import EXPLAIN, PREDICT, Answer, Part, Request
from .model_request import ModelRequestHandler
from .request_body import query_params


class KServeModelHandler(ModelRequestHandler):
    """``GET /v1/models/{m}`` (readiness) and ``POST /v1/models/{m}:predict|:explain``."""

    def get(self, model: str) -> None:
        self.write_json({"name": model,
                         "ready": self.services.dataplane.model_ready(model, None)})

    async def post(self, model: str, verb: str | None = None) -> None:
        if verb is None:
            raise ResourceNotFound(f"POST /v1/models/{model} needs a verb: "
                                   f"/v1/models/{model}:predict or :explain")
        kind = EXPLAIN if verb == "explain" else PREDICT
        request_id = derive_request_id(self.request.headers.get("X-Request-Id"))
        self.request_id = request_id
        headers = dict(self.request.headers.get_all())
        params = query_params(self.request)
        with self.observed(f"/v1/models/{{model_name}}:{verb}", model, kind,
                           "default") as outcome:
            jobs = []
            version = None  # every instance goes to the version the first one was routed to
            for i, instance in enumerate(_instances(self.body())):
                part = Part("body", json.dumps(instance).encode(), "application/json")
                message = Request(f"{request_id}-{i}", [part], headers, params, kind)
                outcome.model_version, job = self.submit(model, version, message, outcome.span)
                version = outcome.model_version.version
                jobs.append(job)
            results = await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)
            answers = [_answer(result) for result in results]
            key = "explanations" if kind == EXPLAIN else "predictions"
            body = json.dumps({key: answers}).encode()
            check_response_size(len(body), self.services.config.max_response_size)
            outcome.code = 200
            self.set_header("X-Request-Id", request_id)
            self.set_header("Content-Type", "application/json")
            self.finish(body)
            if kind == PREDICT:
                self.capture(outcome.model_version, request_id, "application/json", body,
                             "kserve-v1")


def _instances(body: bytes) -> list:
    document = load_json(body or b"null", "body")
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequest('expected {"instances": [...]} with at least one instance')
    return instances


def _answer(outcome: Answer | BaseException) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    outcome.raise_for_error()
    ctype = outcome.ctype.split(";", 1)[0]
    if ctype == "application/json":
        return json.loads(outcome.body)
    if ctype.startswith("text/"):
        return outcome.body.decode("utf-8", "replace")
    return {"b64": base64.b64encode(outcome.body).decode()}


def routes(options: dict[str, Any]) -> list:
    return [
        (r"/v1/models/([^/:]+)", KServeModelHandler, options),
        (r"/v1/models/([^/:]+):(predict|explain)", KServeModelHandler, options),
    ]

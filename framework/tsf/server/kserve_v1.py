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

from ..errors import BadRequest, ResourceNotFound, check_response_size, raise_for_answer
from ..json_body import load_json
from ..request_id import new_request_id
from .request_body import StreamingBodyHandler, query_params


class KServeModelHandler(StreamingBodyHandler):
    """``GET /v1/models/{m}`` (readiness) and ``POST /v1/models/{m}:predict|:explain``."""

    def get(self, model: str) -> None:
        mv = self.services["manager"].registry.get(model)
        self.write_json({"name": model, "ready": mv.ready})

    async def post(self, model: str, verb: str | None = None) -> None:
        if verb is None:
            raise ResourceNotFound(f"POST /v1/models/{model} needs a verb: "
                                   f"/v1/models/{model}:predict or :explain")
        kind = "explain" if verb == "explain" else "predict"
        request_id = self.request.headers.get("X-Request-Id") or new_request_id()
        self.request_id = request_id
        headers = dict(self.request.headers.get_all())
        params = query_params(self.request)
        with self.observed(f"/v1/models/{{model_name}}:{verb}", model, kind,
                           "default") as outcome:
            jobs = []
            version = None  # every instance goes to the version the first one was routed to
            for i, instance in enumerate(_instances(self.body())):
                meta = {"id": f"{request_id}-{i}", "headers": headers, "params": params,
                        "parts": [{"name": "body", "ctype": "application/json"}]}
                outcome.model_version, job = self.submit(
                    model, version, kind, meta, [json.dumps(instance).encode()], outcome.span)
                version = outcome.model_version.version
                jobs.append(job)
            results = await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)
            answers = [_answer(result) for result in results]
            key = "explanations" if kind == "explain" else "predictions"
            body = json.dumps({key: answers}).encode()
            check_response_size(len(body), self.services["config"].max_response_size)
            outcome.code = 200
            self.set_header("X-Request-Id", request_id)
            self.set_header("Content-Type", "application/json")
            self.finish(body)


def _instances(body: bytes) -> list:
    document = load_json(body or b"null", "body")
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequest('expected {"instances": [...]} with at least one instance')
    return instances


def _answer(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    result, payload = outcome
    raise_for_answer(result, payload)
    ctype = result["ctype"].split(";", 1)[0]
    if ctype == "application/json":
        return json.loads(payload)
    if ctype.startswith("text/"):
        return payload.decode("utf-8", "replace")
    return {"b64": base64.b64encode(payload).decode()}


def routes(options: dict[str, Any]) -> list:
    return [
        (r"/v1/models/([^/:]+)", KServeModelHandler, options),
        (r"/v1/models/([^/:]+):(predict|explain)", KServeModelHandler, options),
    ]

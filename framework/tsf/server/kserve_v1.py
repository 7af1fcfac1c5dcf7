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
import time
import uuid
from typing import Any

from ..errors import BadRequest, TsfError, from_dict
from ..manager import ModelManager
from .request_body import StreamingBodyHandler


class KServeModelHandler(StreamingBodyHandler):
    """``GET /v1/models/{m}`` (readiness) and ``POST /v1/models/{m}:predict|:explain``."""

    def get(self, model: str) -> None:
        mv = self.services["manager"].registry.get(model)
        self.write_json({"name": model, "ready": mv.pool.live_count > 0})

    async def post(self, model: str, verb: str) -> None:
        started = time.perf_counter()
        manager: ModelManager = self.services["manager"]
        kind = "explain" if verb == "explain" else "predict"
        span = self.start_trace(f"/v1/models/{{model_name}}:{verb}", model)
        request_id = self.request.headers.get("X-Request-Id") or uuid.uuid4().hex
        self.request_id = request_id
        headers = dict(self.request.headers.get_all())
        params = {k: v[-1].decode("utf-8", "replace")
                  for k, v in self.request.query_arguments.items()}
        code, mv = 500, None
        try:
            instances = _instances(self.body())
            jobs = []
            for i, instance in enumerate(instances):
                meta = {"id": f"{request_id}-{i}", "headers": headers, "params": params,
                        "parts": [{"name": "body", "ctype": "application/json"}]}
                mv, job = manager.submit(model, None, kind, meta,
                                         [json.dumps(instance).encode()], span)
                jobs.append(job)
            outcomes = await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)
            answers = [_answer(outcome) for outcome in outcomes]
            code = 200
            key = "explanations" if kind == "explain" else "predictions"
            self.set_header("X-Request-Id", request_id)
            self.write_json({key: answers})
        except TsfError as exc:
            code = exc.status
            raise
        finally:
            self.end_trace(span, code)
            if mv is not None:
                manager.metrics.record_request(mv.name, mv.version, "default", code,
                                               time.perf_counter() - started, kind)


def _instances(body: bytes) -> list:
    try:
        document = json.loads(body or b"null")
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequest('expected {"instances": [...]} with at least one instance')
    return instances


def _answer(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    result, payload = outcome
    if result.get("error") or result["status"] >= 400:
        raise from_dict(json.loads(payload))
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

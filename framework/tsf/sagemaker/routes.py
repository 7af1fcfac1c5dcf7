"""SageMaker's HTTP contract on the inference port.

Single-model endpoints: ``GET /ping`` (200 once the model has its workers) and
``POST /invocations``.  Multi-model endpoints (``SAGEMAKER_MULTI_MODEL=true``): ``GET /ping``,
``POST /models`` (``{"model_name", "url"}``: load), ``GET /models`` (list, paginated with
``next_page_token``), ``GET /models/{name}``, ``DELETE /models/{name}`` (unload) and
``POST /models/{name}/invoke``.  Bodies reach the model as sent, with their ``Content-Type`` and
``Accept`` headers; the answer carries the content type the model chose.  Both answer
``GET /execution-parameters``, which Batch Transform reads, as TorchServe's endpoint plugin does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..dataplane import DRAINING, derive_request_id
from ..errors import BadRequest, MethodNotAllowed, ServiceUnavailable, check_response_size
from ..server.api_handler import ApiHandler, BodyHandler
from ..server.model_request import ModelRequestHandler
from ..workers.messages import Part, Request
from .models import SINGLE_MODEL_NAME, register_folder

PAGE_LIMIT = 100


class SageMakerRequestHandler(ModelRequestHandler):
    """Shared by the SageMaker routes that invoke a model: one request sent to it."""

    async def invoke(self, model: str, route: str) -> None:
        with self.observed(route, model, "predict", "default") as outcome:
            body = self.body()
            request_id = derive_request_id(
                self.request.headers.get("X-Amzn-SageMaker-Inference-Id")
                or self.request.headers.get("X-Request-Id"))
            self.request_id = request_id
            message = Request(request_id, [Part("body", body, "application/octet-stream")],
                              dict(self.request.headers.get_all()))
            outcome.model_version, job = self.submit(model, None, message, outcome.span)
            answer = await job.future
            answer.raise_for_error()
            check_response_size(len(answer.body), self.services.config.max_response_size)
            outcome.code = answer.status
            self.set_status(answer.status)
            self.set_header("Content-Type", answer.ctype)
            self.set_header("X-Request-Id", request_id)
            for key, value in answer.headers.items():
                self.set_header(key, value)
            self.finish(answer.body)
            self.capture(outcome.model_version, request_id, answer.ctype, answer.body,
                         "sagemaker")


class SageMakerPingHandler(ApiHandler):
    """``GET /ping``: 200 when every model has its workers (and, for a single-model endpoint,
    the model is registered); a JSON 503 naming what is missing otherwise."""

    public = True

    def get(self) -> None:
        dataplane = self.services.dataplane
        if dataplane.draining:
            raise ServiceUnavailable(DRAINING)
        config = self.services.config
        if not config.sagemaker_multi_model and \
                SINGLE_MODEL_NAME not in self.services.manager.registry.names():
            raise ServiceUnavailable(f"the model in {config.sagemaker_model_dir} is not loaded "
                                     "(see the server log)")
        ready, problems = dataplane.ready()
        if not ready:
            raise ServiceUnavailable("; ".join(problems))
        self.write_json({"status": "Healthy"})


class ExecutionParametersHandler(ApiHandler):
    """``GET /execution-parameters``: how Batch Transform should call this container.

    The body of TorchServe's endpoint plugin: ``MaxConcurrentTransforms`` (here the model's
    workers, where TorchServe reads ``NUM_WORKERS``, 1 unless set), ``BatchStrategy``
    ``MULTI_RECORD`` and ``MaxPayloadInMB``, ``max_request_size`` in whole MiB.
    """

    def get(self) -> None:
        config = self.services.config
        workers = config.default_workers_per_model
        registry = self.services.manager.registry
        if not config.sagemaker_multi_model and SINGLE_MODEL_NAME in registry.names():
            workers = registry.get(SINGLE_MODEL_NAME).pool.target or workers
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"MaxConcurrentTransforms": max(1, workers),
                                "BatchStrategy": "MULTI_RECORD",
                                "MaxPayloadInMB": config.max_request_size // (1024 * 1024)},
                               indent=2))


class InvocationsHandler(SageMakerRequestHandler):
    """``POST /invocations``: the single model."""

    async def post(self) -> None:
        await self.invoke(SINGLE_MODEL_NAME, "/invocations")


class MultiModelsHandler(BodyHandler):
    """``POST /models`` (load) and ``GET /models`` (list) of a multi-model endpoint."""

    @property
    def manager(self) -> Any:
        return self.services.manager

    async def post(self) -> None:
        try:
            document = json.loads(self.body() or b"null")
        except ValueError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("model_name"), str) \
                or not isinstance(document.get("url"), str):
            raise BadRequest('expected {"model_name": "...", "url": "/opt/ml/models/.../model"}')
        result = await register_folder(self.manager, self.services.config,
                                       document["model_name"], Path(document["url"]),
                                       synchronous=True)
        self.write_json(result.body())

    def get(self) -> None:
        token = self.get_query_argument("next_page_token", "0")
        limit = self.get_query_argument("page_size", str(PAGE_LIMIT))
        if not token.isdigit() or not limit.isdigit() or int(limit) < 1:
            raise BadRequest("next_page_token and page_size must be non-negative integers")
        names = self.manager.registry.names()
        start, size = int(token), min(int(limit), PAGE_LIMIT)
        page = [self.describe(name) for name in names[start:start + size]]
        body: dict[str, Any] = {"models": page}
        if start + size < len(names):
            body["nextPageToken"] = str(start + size)
        self.write_json(body)

    def describe(self, name: str) -> dict:
        mv = self.manager.registry.get(name)
        return {"modelName": name, "modelUrl": mv.url}


class MultiModelHandler(MultiModelsHandler):
    """``GET /models/{name}`` (describe) and ``DELETE /models/{name}`` (unload)."""

    def get(self, name: str) -> None:  # type: ignore[override]
        self.write_json(self.describe(name))

    async def delete(self, name: str) -> None:
        self.write_json((await self.manager.unregister(name, None)).body())

    async def post(self, name: str) -> None:  # type: ignore[override]
        raise MethodNotAllowed("POST /models/{name} is not a route; invoke a model with "
                               "POST /models/{name}/invoke")


class MultiModelInvokeHandler(SageMakerRequestHandler):
    """``POST /models/{name}/invoke``."""

    async def post(self, name: str) -> None:
        await self.invoke(name, "/models/{model_name}/invoke")


def routes(options: dict[str, Any]) -> list:
    if options["services"].config.sagemaker_multi_model:
        return [(r"/ping", SageMakerPingHandler, options),
                (r"/execution-parameters", ExecutionParametersHandler, options),
                (r"/models", MultiModelsHandler, options),
                (r"/models/([^/]+)", MultiModelHandler, options),
                (r"/models/([^/]+)/invoke", MultiModelInvokeHandler, options)]
    return [(r"/ping", SageMakerPingHandler, options),
            (r"/execution-parameters", ExecutionParametersHandler, options),
            (r"/invocations", InvocationsHandler, options)]

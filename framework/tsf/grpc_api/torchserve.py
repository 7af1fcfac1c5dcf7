"""TorchServe's gRPC services: ``InferenceAPIsService`` and ``ManagementAPIsService``.

Inputs of ``Predictions`` are the request's parts by name, passed to the handler as bytes (as
TorchServe does).  The management methods answer with the JSON text of the REST API.
``StreamPredictions`` sends one message per intermediate answer of a streaming handler
(``context.send_intermediate_predict_response``) as it arrives, then the final answer.
``StreamPredictions2`` answers each request of the stream in order and reports a failure in
the message's ``status`` instead of ending the stream.  A request's ``sequence_id`` names its
stateful sequence (as the ``ts_request_sequence_id`` header does over HTTP).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from google.rpc import status_pb2

from ..errors import BadRequest, TsfError
from ..serving.manager_types import RegisterRequest
from ..workers.messages import TORCHSERVE_GRPC, Part, Request
from .base import PROTOBUF, GrpcService
from .status import abort, grpc_code


def _version(value: str) -> str | None:
    return value or None


class InferenceService(GrpcService):
    """``org.pytorch.serve.grpc.inference.InferenceAPIsService``."""

    service = "org.pytorch.serve.grpc.inference.InferenceAPIsService"

    async def Ping(self, request: Any, context: Any) -> Any:
        report = self.dataplane.health_report()  # the same rule as GET /ping
        body = {"status": report.status}
        if report.problems():
            body["message"] = "; ".join(report.problems())
        if not report.ok:
            await context.abort(grpc_code(503), json.dumps(body))
        return self.pb.TorchServeHealthResponse(health=json.dumps(body, indent=2))

    async def _predict(self, request: Any, headers: dict[str, str], span: Any = None,
                       partials: asyncio.Queue | None = None) -> tuple[Any, bytes]:
        """The final answer; intermediate answers go to ``partials`` when given."""
        if not request.model_name:
            raise BadRequest("model_name is required")
        parts = [Part(key, request.input[key]) for key in request.input]
        if request.HasField("sequence_id"):  # a stateful sequence (sequenceBatching models)
            headers = {**headers, self.services.config.ts_header_key_sequence_id.lower():
                       request.sequence_id}
        message = Request(self.request_id(headers), parts, headers, protocol=TORCHSERVE_GRPC)
        mv, job = self.dataplane.submit(request.model_name, _version(request.model_version),
                                        message, span)
        if partials is not None:
            job.on_partial = lambda answer: partials.put_nowait(answer.body)
        answer = await job.future
        answer.raise_for_error()
        self.check_size(answer.body)
        if partials is None:  # a streamed answer is not captured
            single = len(parts) == 1
            self.capture(mv, message.id, headers,
                         "application/octet-stream" if single else PROTOBUF,
                         parts[0].data if single else request.SerializeToString,
                         answer.ctype, answer.body, TORCHSERVE_GRPC)
        return mv, answer.body

    async def _answer(self, request: Any, context: Any, method: str) -> Any:
        async with self.answering(context, request.model_name, method=method) as outcome:
            headers = self.authorize(context)
            outcome.model_version, payload = await self._predict(request, headers,
                                                                 outcome.span)
            return self.pb.PredictionResponse(prediction=payload)

    async def Predictions(self, request: Any, context: Any) -> Any:
        return await self._answer(request, context, "Predictions")

    async def StreamPredictions(self, request: Any, context: Any) -> AsyncIterator[Any]:
        partials: asyncio.Queue = asyncio.Queue()  # intermediate answers, then None

        async def final() -> Any:
            async with self.answering(context, request.model_name,
                                      method="StreamPredictions") as outcome:
                headers = self.authorize(context)
                outcome.model_version, payload = await self._predict(request, headers,
                                                                     outcome.span, partials)
                return self.pb.PredictionResponse(prediction=payload)

        answer = asyncio.ensure_future(final())
        answer.add_done_callback(lambda _: partials.put_nowait(None))
        try:
            while (payload := await partials.get()) is not None:
                try:
                    self.check_size(payload)
                except TsfError as exc:
                    await abort(context, exc)
                yield self.pb.PredictionResponse(prediction=payload)
            yield answer.result()
        finally:
            answer.cancel()

    async def StreamPredictions2(self, requests: Any, context: Any) -> AsyncIterator[Any]:
        try:
            headers = self.authorize(context)
        except TsfError as exc:
            await abort(context, exc)
        async for request in requests:
            sequence = request.sequence_id if request.HasField("sequence_id") else None
            try:
                async with self.answering(_NoAbort(), request.model_name,
                                          method="StreamPredictions2",
                                          headers=headers) as outcome:
                    outcome.model_version, payload = await self._predict(request, headers,
                                                                         outcome.span)
                yield self.pb.PredictionResponse(prediction=payload, sequence_id=sequence)
            except _Failed as failed:
                status = status_pb2.Status(code=failed.code.value[0], message=failed.message)
                yield self.pb.PredictionResponse(sequence_id=sequence, status=status)


class _Failed(Exception):
    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _NoAbort:
    """Stands in for the call context inside a stream: an error fails one message only."""

    async def abort(self, code: Any, message: str) -> None:
        raise _Failed(code, message)


def _positive(value: int) -> int | None:
    return value if value > 0 else None


class ManagementService(GrpcService):
    """``org.pytorch.serve.grpc.management.ManagementAPIsService``."""

    api = "management"

    def _reply(self, value: Any) -> Any:
        return self.pb.ManagementResponse(msg=json.dumps(value, indent=2))

    async def DescribeModel(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            return self._reply(await self.dataplane.describe_models(
                request.model_name, _version(request.model_version), request.customized))

    async def ListModels(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            return self._reply(self.dataplane.list_models(request.limit,
                                                          request.next_page_token))

    async def RegisterModel(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            self.dataplane.check_model_api()
            if not request.url:
                raise BadRequest("Parameter url is required.")
            result = await self.manager.register(RegisterRequest(
                request.url, synchronous=request.synchronous,
                model_name=request.model_name or None, handler=request.handler or None,
                batch_size=_positive(request.batch_size),
                max_batch_delay=_positive(request.max_batch_delay),
                initial_workers=_positive(request.initial_workers),
                response_timeout=_positive(request.response_timeout),
                startup_timeout=_positive(request.startup_timeout)))
            return self._reply(result.body())

    async def ScaleWorker(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            result = await self.manager.scale(
                request.model_name, _version(request.model_version), request.min_worker,
                request.max_worker or None, request.synchronous)
            return self._reply(result.body())

    async def SetDefault(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            return self._reply(self.manager.set_default(request.model_name,
                                                        request.model_version).body())

    async def UnregisterModel(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            self.dataplane.check_model_api()
            result = await self.manager.unregister(request.model_name,
                                                   _version(request.model_version))
            return self._reply(result.body())

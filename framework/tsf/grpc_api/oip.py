"""The OIP gRPC service ``inference.GRPCInferenceService`` (KServe v2, as Triton clients use).

Inputs come as ``raw_input_contents`` (binary, little-endian) or typed ``contents``; outputs
are always returned as ``raw_output_contents``, which the protocol allows and clients expect
for binary data.  Model requests share the HTTP protocol's parsing and the worker's tensors.
"""

from __future__ import annotations

import json
from typing import Any

from ..dataplane import derive_request_id, server_metadata
from ..errors import BadRequest
from ..oip.datatypes import FORMATS, contents_field, join_bytes_elements
from ..oip.requests import InferRequest, RequestedOutput, outputs_of
from .base import PROTOBUF, GrpcService


def _parameter(value: Any) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


class OipService(GrpcService):
    """``inference.GRPCInferenceService``."""

    service = "inference.GRPCInferenceService"

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        ready, _ = self.dataplane.ready()
        return self.pb.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            return self.pb.ModelReadyResponse(
                ready=self.dataplane.model_ready(request.name, request.version or None))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            return self.pb.ServerMetadataResponse(**server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async with self.answering(context):
            self.authorize(context)
            meta = self.dataplane.model_metadata(request.name, request.version or None)
            tensor = self.pb.ModelMetadataResponse.TensorMetadata
            return self.pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]])

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        async with self.answering(context, request.model_name,
                                  label_version=request.model_version or "default",
                                  method="ModelInfer") as outcome:
            headers = self.authorize(context)
            parsed = parse_grpc(request)
            message = parsed.message(derive_request_id(headers.get("x-request-id"), request.id),
                                     headers, {})
            outcome.model_version, job = self.dataplane.submit(
                request.model_name, request.model_version or None, message, outcome.span)
            outputs = outputs_of(await job.future, parsed)
            mv = outcome.model_version
            raw = [o.raw for o in outputs]
            self.check_size(b"".join(raw))
            tensor = self.pb.ModelInferResponse.InferOutputTensor
            response = self.pb.ModelInferResponse(
                model_name=mv.name, model_version=mv.version, id=request.id,
                outputs=[tensor(name=o.name, datatype=o.datatype, shape=o.shape)
                         for o in outputs],
                raw_output_contents=raw)
            self.capture(mv, message.id, headers, PROTOBUF, request.SerializeToString,
                         PROTOBUF, response.SerializeToString, "oip-grpc")
            return response


def parse_grpc(request: Any) -> InferRequest:
    """A ``ModelInferRequest`` as the parts a worker decodes (raw bytes or JSON lists)."""
    if not request.model_name:
        raise BadRequest("model_name is required")
    if not request.inputs:
        raise BadRequest("expected at least one input tensor")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
                         "give one per input or none")
    parsed = InferRequest(id=request.id or None,
                          parameters={k: _parameter(v) for k, v in request.parameters.items()})
    for i, tensor in enumerate(request.inputs):
        if tensor.datatype not in FORMATS:
            raise BadRequest(f"unknown datatype {tensor.datatype!r}")
        if raw:
            blob, encoding = raw[i], "raw"
        else:
            values = list(getattr(tensor.contents, contents_field(tensor.datatype)))
            if tensor.datatype == "BYTES":
                blob, encoding = join_bytes_elements(values), "raw"
            else:
                blob, encoding = json.dumps(values).encode(), "json"
        parsed.add_input(tensor.name, tensor.datatype, list(tensor.shape), blob, encoding)
    if request.outputs:
        parsed.outputs = [RequestedOutput(o.name, True) for o in request.outputs]
    return parsed

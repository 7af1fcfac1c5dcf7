"""OIP requests and answers in the front end: parse, hand to a worker, build the reply.

An inference request becomes one queued request whose parts are its input tensors (so OIP
requests batch with other traffic).  JSON ``data`` is passed to the worker as JSON and binary
data (``Inference-Header-Content-Length``, or gRPC ``raw_input_contents``) as the bytes
received; the worker builds the tensors.  The worker answers with output descriptors and their
bytes, from which the HTTP reply (JSON data or binary) or the gRPC reply is made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest, TsfError
from ..json_body import json_object
from ..workers.messages import Answer, Part, Request
from .datatypes import check_datatype, check_shape, element_count, item_size, raw_to_list
from .tensors import PROTOCOL, TENSOR_CTYPE, TENSORS_CTYPE


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    """One parsed inference request: its input parts and the outputs asked for."""

    id: str | None = None
    parameters: dict = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_default: bool = False

    def add_input(self, name: Any, datatype: Any, shape: Any, blob: bytes, encoding: str) -> None:
        if not isinstance(name, str) or not name:
            raise BadRequest("every input needs a non-empty \"name\"")
        datatype = check_datatype(datatype)
        shape = check_shape(shape, name)
        if encoding == "raw":
            size = item_size(datatype)
            if size is not None and len(blob) != element_count(shape) * size:
                raise BadRequest(f"input {name!r}: {len(blob)} bytes of binary data, but shape "
                                 f"{shape} of {datatype} needs {element_count(shape) * size}")
        self.parts.append(Part(name, blob, TENSOR_CTYPE, datatype=datatype, shape=shape,
                               encoding=encoding))

    def message(self, request_id: str, headers: dict, params: dict) -> Request:
        """The message a worker gets: the request parameters and then the URL's as params."""
        merged = {**{k: str(v) for k, v in self.parameters.items()}, **params} \
            if params or self.parameters else {}
        return Request(request_id, self.parts, headers, merged, protocol=PROTOCOL)


def parse_http(body: bytes, header_length: str | None) -> InferRequest:
    """``POST /v2/models/{m}/infer``: JSON, or JSON followed by binary tensor data."""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length must be an integer") from None
        if size < 0 or size > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {size} is outside the "
                             f"{len(body)}-byte body")
        head, binary = body[:size], memoryview(body)[size:]
    else:
        head, binary = body, memoryview(b"")
    document = json_object(head, "inference request")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('expected "inputs": a non-empty list of tensors')
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest('"parameters" must be an object')
    request = InferRequest(id=_optional_text(document.get("id")),
                           parameters={k: v for k, v in parameters.items()
                                       if k not in ("binary_data_output",)},
                           binary_default=bool(parameters.get("binary_data_output", False)))
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise BadRequest("every input must be an object")
        tensor_params = tensor.get("parameters") or {}
        size = tensor_params.get("binary_data_size") if isinstance(tensor_params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"input {tensor.get('name')!r}: binary_data_size {size!r} runs "
                                 "past the binary data")
            blob, encoding = bytes(binary[offset:offset + size]), "raw"
            offset += size
        elif "data" in tensor:
            blob, encoding = json.dumps(tensor["data"]).encode(), "json"
        else:
            raise BadRequest(f"input {tensor.get('name')!r} has neither \"data\" nor "
                             "binary_data_size")
        request.add_input(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), blob,
                          encoding)
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    outputs = document.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and
                                                    isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise BadRequest('"outputs" must be a list of objects with a "name"')
        request.outputs = [RequestedOutput(o["name"], bool((o.get("parameters") or {}).get(
            "binary_data", request.binary_default))) for o in outputs]
    return request


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    raw: bytes
    binary: bool = False

    def as_json(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype,
                               "shape": self.shape}
        if self.binary:
            out["parameters"] = {"binary_data_size": len(self.raw)}
        else:
            out["data"] = raw_to_list(self.datatype, self.raw)
        return out


def outputs_of(answer: Answer, request: InferRequest) -> list[OutputTensor]:
    """The worker's answer as output tensors, filtered to those requested."""
    answer.raise_for_error()
    if answer.ctype != TENSORS_CTYPE or answer.tensors is None:
        raise TsfError("the handler's answer was not converted to tensors")
    produced, offset, payload = {}, 0, answer.body
    for d in answer.tensors:
        produced[d["name"]] = OutputTensor(d["name"], d["datatype"], d["shape"],
                                           payload[offset:offset + d["size"]],
                                           request.binary_default)
        offset += d["size"]
    if request.outputs is None:
        return list(produced.values())
    chosen = []
    for wanted in request.outputs:
        tensor = produced.get(wanted.name)
        if tensor is None:
            raise BadRequest(f"output {wanted.name!r} was requested but the model produces "
                             f"{sorted(produced)}")
        tensor.binary = wanted.binary
        chosen.append(tensor)
    return chosen


def http_reply(model: str, version: str, request: InferRequest,
               outputs: list[OutputTensor]) -> tuple[bytes, int | None]:
    """The reply body, and the JSON header's length when binary data follows it."""
    document: dict[str, Any] = {"model_name": model, "model_version": version,
                                "outputs": [o.as_json() for o in outputs]}
    if request.id is not None:
        document["id"] = request.id
    head = json.dumps(document, separators=(",", ":")).encode()
    binary = [o.raw for o in outputs if o.binary]
    if not binary:
        return head, None
    return head + b"".join(binary), len(head)


def tensor_metadata(entries: Any) -> list[dict]:
    """Signature entries (``name``, ``datatype``, ``shape``) as OIP tensor metadata."""
    out = []
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name"):
            out.append({"name": str(entry["name"]),
                        "datatype": str(entry.get("datatype", "FP32")),
                        "shape": [int(d) for d in entry.get("shape", [])]})
    return out

"""OIP tensors inside a worker: request parts to torch tensors, handler results to OIP outputs.

A tensor part arrives with its ``datatype``, ``shape`` and ``encoding``: ``raw`` (the binary
extension's little-endian bytes) or ``json`` (the ``data`` list as sent).  Handlers receive a
``torch.Tensor`` per input, or for ``BYTES`` a nested list of ``bytes`` in the tensor's shape.

A handler's result for an OIP request becomes one or more output tensors: a dict names them,
a tensor (or anything ``torch.as_tensor`` takes) is one output named after the model's
signature (``output0`` without one), and text or bytes become ``BYTES``.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest, HandlerError
from ..json_body import load_json
from ..workers.messages import Part
from .datatypes import (check_datatype, element_count, item_size, join_bytes_elements,
                        split_bytes_elements)

PROTOCOL = "oip"  # the request message's ``protocol``, and ``context.get_request_protocol(i)``
TENSOR_CTYPE = "application/x-tsf-tensor"
TENSORS_CTYPE = "application/x-tsf-tensors"

_TORCH_NAMES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
                "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
                "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64"}


def torch_dtype(datatype: str):
    import torch

    return getattr(torch, _TORCH_NAMES[datatype])


def _datatype_of(tensor: Any) -> str:
    import torch

    for name, torch_name in _TORCH_NAMES.items():
        if tensor.dtype == getattr(torch, torch_name, None):
            return name
    raise HandlerError(f"tensor dtype {tensor.dtype} has no OIP datatype; convert it in "
                       "tsf_postprocess")


def _nest(flat: list, shape: list[int]) -> list:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _flatten(value: Any) -> list:
    if not isinstance(value, list):
        return [value]
    out: list = []
    for item in value:
        out.extend(_flatten(item))
    return out


def decode_tensor(part: Part) -> Any:
    """The tensor one OIP input part carries, checked against its declared shape."""
    import torch

    name, blob = part.name, part.data
    datatype = check_datatype(part.datatype)
    shape = list(part.shape or [])
    count = element_count(shape)
    if part.encoding == "json":
        data = load_json(blob, f"input {name!r}")
        if datatype == "BYTES":
            flat = [item.encode() if isinstance(item, str) else item
                    for item in _flatten(data)]
            if len(flat) != count or not all(isinstance(i, (bytes, bytearray)) for i in flat):
                raise BadRequest(f"input {name!r}: expected {count} strings for shape {shape}")
            return _nest(flat, shape)
        try:
            tensor = torch.tensor(data, dtype=torch_dtype(datatype))
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise BadRequest(f"input {name!r}: data is not a {datatype} tensor ({exc})") from None
        if tensor.numel() != count:
            raise BadRequest(f"input {name!r}: {tensor.numel()} values do not fill shape "
                             f"{shape} ({count} elements)")
        return tensor.reshape(shape)
    if datatype == "BYTES":
        flat = split_bytes_elements(blob, name)
        if len(flat) != count:
            raise BadRequest(f"input {name!r}: {len(flat)} BYTES elements do not fill shape "
                             f"{shape}")
        return _nest(flat, shape)
    size = item_size(datatype)
    if len(blob) != count * size:
        raise BadRequest(f"input {name!r}: {len(blob)} bytes of binary data, but shape {shape} "
                         f"of {datatype} needs {count * size}")
    if count == 0:
        return torch.empty(shape, dtype=torch_dtype(datatype))
    return torch.frombuffer(bytearray(blob), dtype=torch_dtype(datatype)).reshape(shape)


def default_output_name(context: Any) -> str:
    """The first output of the model's signature (model-config or handler), else ``output0``."""
    for signature in (context.model_config.get("signature"),
                      getattr(context.handler, "signature", None)):
        outputs = signature.get("outputs") if isinstance(signature, dict) else None
        if outputs and isinstance(outputs[0], dict) and outputs[0].get("name"):
            return str(outputs[0]["name"])
    return "output0"


def _raw(tensor: Any) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    try:
        return tensor.numpy().tobytes()
    except (ImportError, RuntimeError, TypeError):  # no numpy, or a dtype numpy lacks
        return bytes(tensor.clone().untyped_storage())


def _one_output(name: str, value: Any) -> tuple[dict, bytes]:
    import torch

    if isinstance(value, (str, bytes, bytearray)):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, (str, bytes, bytearray))
                                                 for v in _flatten(value)):
        flat = [v.encode() if isinstance(v, str) else bytes(v) for v in _flatten(value)]
        shape = _list_shape(value)
        return {"name": name, "datatype": "BYTES", "shape": shape}, join_bytes_elements(flat)
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise HandlerError(f"output {name!r}: cannot make a tensor of a "
                               f"{type(value).__name__} ({exc})") from None
    if value.dtype == torch.bfloat16:
        value = value.float()
    if value.dim() == 0:
        value = value.reshape(1)
    return ({"name": name, "datatype": _datatype_of(value), "shape": list(value.shape)},
            _raw(value))


def _list_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def encode_outputs(value: Any, default_name: str) -> tuple[list[dict], bytes]:
    """Output descriptors (name, datatype, shape, size) and their bytes, back to back."""
    import torch

    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)) and value and \
            all(isinstance(v, torch.Tensor) for v in value) and len(value) > 1:
        items = [(f"output{i}", v) for i, v in enumerate(value)]
    else:
        items = [(default_name, value)]
    descriptors, chunks = [], []
    for name, item in items:
        descriptor, raw = _one_output(name, item)
        descriptor["size"] = len(raw)
        descriptors.append(descriptor)
        chunks.append(raw)
    return descriptors, b"".join(chunks)

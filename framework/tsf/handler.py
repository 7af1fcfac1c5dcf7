"""The built-in ``base`` handler: JSON tensors in, model, JSON tensors out.

Each request carries one sample as a nested list (``[[...]]``) or ``{"data": ...}``
(``"inputs"`` and ``"instances"`` are accepted too).  Samples of equal shape are stacked into one
batch along a new first dimension, run through the model once, and split back: one result per
request.  Samples of different shapes run one by one.  Integer input is cast to float32 unless
the model embeds tokens (has an ``Embedding``) or ``handler.input_dtype`` says otherwise.
KServe v2 / OIP requests carry one tensor with its own batch dimension: those are concatenated
along it and each request gets its rows back as tensors.  Joining the tensors into a batch and
cutting the outputs back per request are the overridable ``collate`` and ``split`` steps; what
one batch must remember between them lives in ``context.batch_state``.

This module is also the worker's built-in plugin: it registers the ``base`` handler, and a
``FallbackHandler`` answers any stage a custom handler leaves out.  torch is imported lazily.
"""

from __future__ import annotations

from typing import Any

from . import hookimpl
from .errors import BadRequest, HandlerError
from .json_body import load_json
from .oip.tensors import PROTOCOL as OIP

INPUT_KEYS = ("data", "inputs", "instances", "body")
OIP_ROWS = "oip_rows"  # context.batch_state key: rows per request of concatenated OIP tensors
# context.batch_state key: for a handler with ``prepare_request`` (see tsf.runtime.read_ahead),
# one future per request of the batch holding what prepare_request returned (or raised)
PREPARED = "prepared"


def prepared(context: Any, index: int) -> Any:
    """The future of request ``index``'s ``prepare_request``, or ``None`` where the worker
    prepared nothing (a handler then does the work itself, in its stage)."""
    futures = context.batch_state.get(PREPARED)
    return futures[index] if futures and index < len(futures) else None


class Ragged(list):
    """A batch whose samples have different shapes: run one by one."""


def request_payload(request: dict, index: int, request_id: str) -> Any:
    """The JSON value a request carries, whichever key or encoding it came in."""
    value = next((request[k] for k in INPUT_KEYS if k in request), None)
    if value is None and len(request) == 1:
        value = next(iter(request.values()))
    if isinstance(value, (bytes, bytearray, str)):
        value = load_json(value, f"request {request_id or index}: body")
    if isinstance(value, dict):
        value = next((value[k] for k in INPUT_KEYS if k in value), value)
    if value is None or isinstance(value, dict):
        raise BadRequest(f"request {request_id or index}: expected a nested list of numbers "
                         "or {\"data\": [...]}")
    return value


def _wants_float(model: Any) -> bool:
    import torch

    if not isinstance(model, torch.nn.Module):
        return True
    for module in model.modules():
        name = getattr(module, "original_name", type(module).__name__)
        if "Embedding" in name:
            return False
    return True


class BaseHandler:
    """Tensor-in, tensor-out handler used when an archive names no handler (or ``base``).

    Subclass it and override any ``tsf_*`` stage method; undecorated overrides count.  The
    default stages call two smaller steps a subclass may override instead: :meth:`collate`
    (request tensors to one batch) and :meth:`split` (model outputs to one result per request).

    Explainers (``tsf_explain`` plugins such as tsf-explain-captum) read two things from a
    handler: ``task``, what kind of model it serves (``"image_classification"``,
    ``"image_segmentation"``, ``"object_detection"``, ``"text_classification"``, or ``None``),
    and :meth:`forward`, the model call without ``inference_mode`` so gradients can flow.
    """

    task: str | None = None

    @hookimpl
    def tsf_load_model(self, context: Any) -> Any:
        from .runtime.model_loader import load_model

        model = load_model(context)
        dtype = context.handler_config.get("input_dtype")
        context.input_dtype = dtype or ("float32" if _wants_float(model) else None)
        return model

    def to_tensor(self, context: Any, value: Any, index: int):
        import torch

        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise BadRequest(f"request {context.get_request_id(index) or index}: cannot make a "
                             f"tensor of the input ({exc})") from None
        dtype = getattr(context, "input_dtype", "float32")
        if dtype and tensor.dtype != getattr(torch, dtype):
            tensor = tensor.to(getattr(torch, dtype))
        return tensor

    @hookimpl
    def tsf_preprocess(self, context: Any, requests: list[dict]) -> Any:
        for i, request in enumerate(requests):
            if context.get_request_protocol(i) == OIP and len(request) != 1:
                raise BadRequest(f"request {context.get_request_id(i) or i}: the base handler "
                                 f"takes one input tensor, got {len(request)} "
                                 f"({', '.join(request)}); write a tsf_preprocess for more")
        tensors = [self.to_tensor(context, request_payload(r, i, context.get_request_id(i)), i)
                   for i, r in enumerate(requests)]
        return self.collate(context, tensors)

    def collate(self, context: Any, tensors: list) -> Any:
        """Join one tensor per request into the model's input, on ``context.device``.

        Samples of one shape are stacked along a new first dimension; OIP tensors, which carry
        their own batch dimension, are concatenated along it and their row counts recorded in
        ``context.batch_state[OIP_ROWS]`` for :meth:`split`; anything else becomes a
        :class:`Ragged` batch the model runs sample by sample.
        """
        import torch

        oip = [context.get_request_protocol(i) == OIP for i in range(len(tensors))]
        if all(oip) and all(t.dim() > 0 and t.shape[1:] == tensors[0].shape[1:]
                            for t in tensors):
            context.batch_state[OIP_ROWS] = [t.shape[0] for t in tensors]
            return torch.cat(tensors).to(context.device)
        if not any(oip) and all(t.shape == tensors[0].shape for t in tensors):
            return torch.stack(tensors).to(context.device)
        return Ragged((t if oip[i] else t.unsqueeze(0)).to(context.device)
                      for i, t in enumerate(tensors))

    def forward(self, context: Any, batch: Any) -> Any:
        """Run the model on a preprocessed batch (gradients allowed; explainers call this)."""
        if isinstance(batch, Ragged):
            return Ragged(context.model(sample) for sample in batch)
        return context.model(batch)

    @hookimpl
    def tsf_inference(self, context: Any, batch: Any) -> Any:
        import torch

        with torch.inference_mode():
            try:
                return self.forward(context, batch)
            except torch.cuda.OutOfMemoryError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
                # the base handler feeds the client's tensors to the model as they came:
                # a model that cannot take them (shape, dtype; an exported program's guards
                # raise AssertionError) is refusing that input
                raise BadRequest(f"the model cannot take this input ({_shapes(batch)}): "
                                 f"{type(exc).__name__}: {exc}") from None

    @hookimpl
    def tsf_postprocess(self, context: Any, outputs: Any) -> list:
        return self.split(context, outputs, len(context.request_ids))

    def split(self, context: Any, outputs: Any, count: int) -> list:
        """Cut the model's ``outputs`` back into ``count`` results, one per request.

        A :class:`Ragged` batch gives each request its own output; concatenated OIP tensors give
        each request its rows (``context.batch_state[OIP_ROWS]``), as tensors; otherwise request
        ``i`` gets row ``i`` as JSON-able data.  Outputs may be a tensor, a tuple or list of
        tensors, or a dict of tensors.
        """
        if isinstance(outputs, Ragged):  # OIP answers keep their tensors (and dtypes)
            return [out if context.get_request_protocol(i) == OIP else _to_python(out, 0)
                    for i, out in enumerate(outputs)]
        rows = context.batch_state.get(OIP_ROWS)
        if rows is not None:
            starts = [sum(rows[:i]) for i in range(count)]
            return [_rows(outputs, start, start + n) for start, n in zip(starts, rows)]
        return [_to_python(outputs, i) for i in range(count)]


def _shapes(batch: Any) -> str:
    samples = batch if isinstance(batch, Ragged) else [batch]
    return "; ".join(f"shape {list(t.shape)}, dtype {str(t.dtype).replace('torch.', '')}"
                     for t in samples)


def _to_python(outputs: Any, index: int) -> Any:
    """Row ``index`` of a model output (tensor, tuple/list or dict of tensors) as JSON-able data."""
    if hasattr(outputs, "detach"):
        return outputs[index].detach().cpu().tolist()
    if isinstance(outputs, dict):
        return {k: _to_python(v, index) for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return [_to_python(v, index) for v in outputs]
    raise HandlerError(f"cannot split a model output of type {type(outputs).__name__} "
                       "per request; write a tsf_postprocess")


def _rows(outputs: Any, start: int, end: int) -> Any:
    """Rows ``start:end`` of a model output (tensor, tuple/list or dict of tensors)."""
    if hasattr(outputs, "detach"):
        return outputs[start:end].detach()
    if isinstance(outputs, dict):
        return {k: _rows(v, start, end) for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return [_rows(v, start, end) for v in outputs]
    raise HandlerError(f"cannot split a model output of type {type(outputs).__name__} "
                       "per request; write a tsf_postprocess")


class FallbackHandler(BaseHandler):
    """Answers, last, every stage a model's own handler does not implement."""

    tsf_fallback = True


@hookimpl
def tsf_register_handlers() -> dict:
    # sagemaker: a SageMaker inference.py (model_fn, input_fn, ...) served unchanged
    # llm, vllm_handler: a Hugging Face model folder served by a generation engine plugin
    return {"base": BaseHandler, "sagemaker": "tsf.sagemaker.handler:SageMakerHandler",
            "llm": "tsf.generation.handler:LLMHandler",
            "vllm_handler": "tsf.generation.handler:VLLMHandler"}

"""The built-in ``sagemaker`` handler: a SageMaker PyTorch ``inference.py`` served unchanged.

``code/inference.py`` (or the file ``SAGEMAKER_PROGRAM`` names) in the model folder may define
``model_fn(model_dir)``, ``input_fn(request_body, content_type)``, ``predict_fn(data, model)``,
``output_fn(prediction, accept)`` (any subset) or ``transform_fn(model, body, content_type,
accept)`` instead of the last three; each may take SageMaker's trailing ``context`` argument.
What is missing falls back to the toolkit's defaults: the one TorchScript ``.pt``/``.pth`` file,
JSON / CSV / NPY decoded to a float tensor, ``model(data)`` under ``no_grad``, the answer
encoded for ``Accept`` (``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` when it is absent or ``*/*``).

As in the toolkit, JSON and CSV bodies reach ``input_fn`` as ``str``, others as ``bytes``, and
``output_fn`` may return the body or ``(body, content_type)``.  The toolkit's errors raised from
any function reach the client (:func:`toolkit_error`): a ``GenericInferenceToolkitError(status,
message)`` answers that status and message, an ``UnsupportedFormatError`` 415 (406 from
``output_fn``).  Scripts import them from ``sagemaker_inference`` (``tsf-sagemaker-compat``).
"""

from __future__ import annotations

import inspect
import json
import os
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable

from .. import hookimpl
from ..errors import BadRequest, ModelLoadError, TsfError
from ..runtime.handler_resolver import import_file
from . import codecs

FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")


def user_module_path(model_dir: Path) -> Path:
    """``code/inference.py`` (or ``code/$SAGEMAKER_PROGRAM``) inside the model folder."""
    program = os.environ.get("SAGEMAKER_PROGRAM") or "inference.py"
    if not program.endswith(".py"):
        program += ".py"
    return model_dir / "code" / Path(program).name


def toolkit_error(exc: BaseException, stage: str) -> TsfError | None:
    """The answer for an error of SageMaker's toolkit raised in ``stage`` (``input_fn``...),
    or None for any other exception.

    Recognised by class name, so the PyPI toolkit's classes count as much as
    ``tsf-sagemaker-compat``'s.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "BaseInferenceToolkitError" in names:
        status = getattr(exc, "status_code", 500)
        status = status if isinstance(status, int) and 400 <= status <= 599 else 500
        message = str(getattr(exc, "message", "") or exc)
        return TsfError(message, status=status,
                        type=HTTPStatus(status).phrase.replace(" ", "") + "Exception")
    if "UnsupportedFormatError" in names:
        return codecs.NotAcceptable(str(exc)) if stage == "output_fn" else \
            codecs.UnsupportedContentType(str(exc))
    return None


def call(function: Callable, args: tuple, context: Any, stage: str = "") -> Any:
    """Call a user function with or without SageMaker's trailing ``context`` argument; the
    toolkit's errors become answers (:func:`toolkit_error`)."""
    try:
        return _call(function, args, context)
    except TsfError:
        raise
    except Exception as exc:
        error = toolkit_error(exc, stage)
        if error is None:
            raise
        raise error from None


def _call(function: Callable, args: tuple, context: Any) -> Any:
    try:
        count = len(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        count = len(args)
    if count == len(args) + 1:
        return function(*args, context)
    if count != len(args):
        raise TypeError(f"{getattr(function, '__name__', function)} takes {count} arguments; "
                        f"SageMaker passes {len(args)} (or {len(args) + 1} with context)")
    return function(*args)


class SageMakerHandler:
    """Runs ``model_fn`` once per worker and ``input_fn`` -> ``predict_fn`` -> ``output_fn``
    (or ``transform_fn``) once per request, like SageMaker's PyTorch inference toolkit."""

    def __init__(self) -> None:
        self.user: dict[str, Callable] = {}
        self.model: Any = None
        self.device = "cpu"

    @hookimpl
    def tsf_load_model(self, context: Any) -> Any:
        model_dir = Path(context.model_dir)
        path = user_module_path(model_dir)
        if path.is_file():
            module = import_file(path, f"tsf_sagemaker_{context.model_name}_{path.stem}")
            self.user = {name: getattr(module, name) for name in FUNCTIONS
                         if callable(getattr(module, name, None))}
        if "transform_fn" in self.user and set(self.user) & {"input_fn", "predict_fn",
                                                              "output_fn"}:
            raise ModelLoadError("inference.py defines transform_fn together with input_fn, "
                                 "predict_fn or output_fn; SageMaker allows one or the other")
        self.device = context.device
        model_fn = self.user.get("model_fn", self.default_model_fn)
        self.model = call(model_fn, (str(model_dir),), context, "model_fn")
        return self.model

    @hookimpl
    def tsf_preprocess(self, context: Any, requests: list[dict]) -> Any:
        return requests

    @hookimpl
    def tsf_inference(self, context: Any, batch: list[dict]) -> list:
        default_accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or codecs.JSON
        answers = []
        for index, request in enumerate(batch):
            body = request.get("body", b"")
            if not isinstance(body, (bytes, bytearray, str)):  # JSON a route already parsed
                body = json.dumps(body)
            content_type = context.get_request_header(index, "Content-Type") or ""
            accept = context.get_request_header(index, "Accept") or ""
            if not accept or accept.strip() == codecs.ANY:
                accept = default_accept
            if codecs.media_type(content_type) in codecs.UTF8_TYPES and \
                    isinstance(body, (bytes, bytearray)):
                try:
                    body = body.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest(f"request {context.get_request_id(index)}: a "
                                     f"{content_type} body must be UTF-8") from None
            result = self.transform(body, content_type, accept, context)
            answer, answer_type = result if isinstance(result, tuple) else (result, accept)
            context.set_response_content_type(index, answer_type)
            answers.append(answer)
        return answers

    @hookimpl
    def tsf_postprocess(self, context: Any, outputs: list) -> list:
        return outputs

    def transform(self, body: Any, content_type: str, accept: str, context: Any) -> Any:
        if "transform_fn" in self.user:
            return call(self.user["transform_fn"], (self.model, body, content_type, accept),
                        context, "transform_fn")
        data = call(self.user.get("input_fn", self.default_input_fn), (body, content_type),
                    context, "input_fn")
        prediction = call(self.user.get("predict_fn", self.default_predict_fn),
                          (data, self.model), context, "predict_fn")
        return call(self.user.get("output_fn", self.default_output_fn), (prediction, accept),
                    context, "output_fn")

    # --- the toolkit's defaults --------------------------------------------------------------
    def default_model_fn(self, model_dir: str) -> Any:
        import torch

        folder = Path(model_dir)
        path = folder / "model.pt"
        if not path.is_file():
            found = sorted(p for p in folder.iterdir() if p.is_file()
                           and p.suffix in (".pt", ".pth"))
            if len(found) != 1:
                raise ModelLoadError("without a model_fn, the model folder must hold exactly one "
                                     f".pt or .pth TorchScript file; found {len(found)}")
            path = found[0]
        try:
            return torch.jit.load(str(path), map_location=self.device).eval()
        except RuntimeError as exc:
            raise ModelLoadError(f"{path.name} is not a TorchScript model (write a model_fn in "
                                 f"code/inference.py to load it): {exc}") from None

    def default_input_fn(self, body: Any, content_type: str) -> Any:
        import torch

        array = codecs.decode(body, content_type)
        try:
            if codecs.media_type(content_type) in codecs.UTF8_TYPES:
                tensor = torch.tensor(array.tolist(), dtype=torch.float32)
            else:
                tensor = torch.from_numpy(array)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise BadRequest(f"the {codecs.media_type(content_type)} body is not a numeric "
                             f"array: {exc}") from None
        return tensor.to(self.device)

    def default_predict_fn(self, data: Any, model: Any) -> Any:
        import torch

        with torch.no_grad():
            return model(data.to(self.device) if hasattr(data, "to") else data)

    def default_output_fn(self, prediction: Any, accept: str) -> tuple[Any, str]:
        return codecs.encode_for(prediction, accept)

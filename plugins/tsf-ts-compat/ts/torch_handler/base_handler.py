"""``BaseHandler``: TorchServe's default handler contract, loading models with tsf's loader.

``initialize`` loads the archive's model (eager ``--model-file`` + state_dict, TorchScript
``.pt``, or a ``torch.export`` program) on the device tsf chose for the worker, applies the
``pt2`` section of model-config.yaml with ``torch.compile`` as TorchServe does, and reads
``index_to_name.json`` into ``mapping``.  ``handle`` runs preprocess -> inference ->
postprocess, or ``explain_handle`` when the request carries the ``explain: True`` header
(``/explanations``), or ``describe_handle`` for ``describe: True``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from tsf.errors import ModelLoadError, NotImplementedByModel
from tsf.runtime.model_loader import load_model

from ..handler_utils.timer import timed
from ..utils.util import check_valid_pt2_backend, load_label_mapping

logger = logging.getLogger(__name__)


def compile_options(pt2: Any) -> dict | None:
    """The ``torch.compile`` keyword arguments the ``pt2`` section asks for, or ``None``.

    ``pt2: {compile: {enable: true, backend: ..., mode: ...}}`` (TorchServe's current form),
    ``pt2: "inductor"`` or ``pt2: {backend: ..., ...}`` (its older forms).  ``export`` sections
    and unknown backends compile nothing.
    """
    if isinstance(pt2, str):
        options = {"backend": pt2}
    elif isinstance(pt2, dict) and "compile" in pt2:
        section = dict(pt2["compile"] or {})
        if section.pop("enable", False) is not True:
            return None
        options = section
    elif isinstance(pt2, dict) and "export" in pt2:
        return None
    elif isinstance(pt2, dict):
        options = dict(pt2)
    else:
        raise ModelLoadError("pt2 in model-config.yaml should be a string or a mapping")
    if "backend" in options and not check_valid_pt2_backend(options["backend"]):
        return None
    return options


class BaseHandler:
    """Base of TorchServe-style handlers; subclass and override preprocess/inference/postprocess."""

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict | None = None
        self.device: Any = None
        self.initialized = False
        self.context: Any = None
        self.model_pt_path: str | None = None
        self.manifest: dict | None = None
        self.map_location: str | None = None
        self.explain = False
        self.target = 0
        self.model_yaml_config: dict = {}
        self.profiler_args: dict = {}

    def initialize(self, context: Any) -> None:
        self.context = context
        self.model_yaml_config = getattr(context, "model_yaml_config", None) or {}
        properties = context.system_properties
        self.device = torch.device(context.device)
        self.map_location = self.device.type
        self.manifest = context.manifest
        model_dir = properties.get("model_dir")
        model_info = self.manifest.get("model", {})
        serialized = model_info.get("serializedFile")
        self.model_pt_path = os.path.join(model_dir, serialized) if serialized else None
        model_file = model_info.get("modelFile", "")
        if model_file:
            self.model = self._load_pickled_model(model_dir, model_file, self.model_pt_path)
            self.model.to(self.device)
            self.model.eval()
        elif self.model_pt_path and self.model_pt_path.endswith(".pt"):
            self.model = self._load_torchscript_model(self.model_pt_path)
            self.model.eval()
        elif self.model_pt_path:
            self.model = load_model(context)  # torch.export programs (.pt2)
        else:
            raise ModelLoadError("No model weights could be loaded: the manifest names no "
                                 "serializedFile and no modelFile")
        self._compile(self.model_yaml_config.get("pt2"))
        self.mapping = load_label_mapping(os.path.join(model_dir, "index_to_name.json"))
        self.initialized = True

    def _compile(self, pt2: Any) -> None:
        if pt2 is None:
            return
        options = compile_options(pt2)
        if options is None:
            return
        try:
            self.model = torch.compile(self.model, **options)
            logger.info("compiled the model with torch.compile(%s)", options)
        except Exception as exc:  # TorchServe goes on uncompiled
            logger.warning("torch.compile(%s) failed, proceeding without compilation: %s",
                           options, exc)

    def _load_torchscript_model(self, model_pt_path: str) -> Any:
        return torch.jit.load(model_pt_path, map_location=self.device)

    def _load_pickled_model(self, model_dir: str, model_file: str,
                            model_pt_path: str | None) -> Any:
        """The model class in ``model_file`` with the state_dict (``weights_only=True``)."""
        return load_model(self.context)

    @timed
    def preprocess(self, data: list) -> Any:
        return torch.as_tensor(data, device=self.device)

    @timed
    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return self.model(data.to(self.device), *args, **kwargs)

    @timed
    def postprocess(self, data: Any) -> list:
        return data.tolist()

    def handle(self, data: list, context: Any) -> list:
        start = time.time()
        self.context = context
        if self._is_describe():
            output = [self.describe_handle()]
        else:
            preprocessed = self.preprocess(data)
            if self._is_explain():
                output = self.explain_handle(preprocessed, data)
            else:
                output = self.postprocess(self.inference(preprocessed))
        context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2),
                                 None, "ms")
        return output

    def explain_handle(self, data_preprocess: Any, raw_data: list) -> Any:
        """``get_insights`` for the first request's ``data`` (or ``body``) and ``target``."""
        inputs, target = None, 0
        row = raw_data[0]
        if isinstance(row, dict):
            inputs = row.get("data") or row.get("body")
            target = row.get("target") or 0
        return self.get_insights(data_preprocess, inputs, target)

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> Any:
        raise NotImplementedByModel(f"{type(self).__name__} does not implement get_insights, "
                                    "so it cannot explain")

    def _header_is_true(self, name: str) -> bool:
        context = self.context
        return bool(context is not None and context.request_processor and
                    context.get_request_header(0, name) == "True")

    def _is_explain(self) -> bool:
        if self._header_is_true("explain"):
            self.explain = True
            return True
        return False

    def _is_describe(self) -> bool:
        return self._header_is_true("describe")

    def describe_handle(self) -> Any:
        """What ``describe: True`` requests get; override it (TorchServe's returns None)."""
        return None

    def get_device(self) -> Any:
        return self.device

"""``ts.utils.util``: label mapping, class discovery, pt2 backends and ``PredictionException``."""

from __future__ import annotations

import enum
import functools
import inspect
import itertools
import json
import logging
import os
import re
import warnings
from types import ModuleType
from typing import Any, Callable

from tsf.errors import TsfError

logger = logging.getLogger(__name__)

# HTML tags and entities, removed from text before tokenizing
CLEANUP_REGEX = re.compile("<.*?>|&([a-z0-9]+|#[0-9]{1,6}|#x[0-9a-f]{1,6});")


class PT2Backend(str, enum.Enum):
    """The ``torch.compile`` backends TorchServe accepts in model-config.yaml's ``pt2``."""

    EAGER = "eager"
    AOT_EAGER = "aot_eager"
    INDUCTOR = "inductor"
    NVFUSER = "nvfuser"
    AOT_NVFUSER = "aot_nvfuser"
    AOT_CUDAGRAPHS = "aot_cudagraphs"
    OFI = "ofi"
    FX2TRT = "fx2trt"
    ONNXRT = "onnxrt"
    IPEX = "ipex"
    TORCHXLA_TRACE_ONCE = "torchxla_trace_once"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"
    HPU_BACKEND = "hpu_backend"


class PredictionException(TsfError):
    """Raise it from a handler to answer with ``error_code`` and ``message``.

    tsf answers ``{"code": error_code, "type": "InternalServerException", "message": message}``,
    the body TorchServe 0.12 sends for it (the type is its front end's, not the exception's); a
    code outside 400-599 answers 500.
    """

    def __init__(self, message: str, error_code: int = 500) -> None:
        self.error_code = error_code
        try:
            status = int(error_code)
        except (TypeError, ValueError):
            status = 500
        super().__init__(str(message), status=status if 400 <= status <= 599 else 500,
                         type="InternalServerException")

    def __str__(self) -> str:
        return f"{self.message} : {self.error_code}"


def list_classes_from_module(module: ModuleType, parent_class: type | None = None) -> list[type]:
    """The classes defined in ``module`` itself (not imported), optionally subclasses only."""
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if obj.__module__ == module.__name__]
    if parent_class is not None:
        classes = [c for c in classes if issubclass(c, parent_class)]
    return classes


def check_valid_pt2_backend(backend: str) -> bool:
    if backend in {b.value for b in PT2Backend}:
        return True
    logger.warning("%s is not a supported torch.compile backend", backend)
    return False


def load_label_mapping(mapping_file_path: str) -> dict[str, str] | None:
    """``index_to_name.json`` as ``{"0": "label"}``; ``None`` (with a warning) if absent.

    A list value (``["n01440764", "tench"]``) gives its last item; ``{"object_type_names":
    [...]}`` is numbered from 0.
    """
    if not os.path.isfile(mapping_file_path):
        logger.warning("%r is missing. Inference output will not include class name.",
                       mapping_file_path)
        return None
    with open(mapping_file_path) as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict):
        raise ValueError('index->name JSON mapping should be in "class": "label" format.')
    names = mapping.get("object_type_names")
    if isinstance(names, list):
        return {str(i): name for i, name in enumerate(names)}
    out = {}
    for key, value in mapping.items():
        label = value[-1] if isinstance(value, list) and value else value
        if not isinstance(label, str):
            raise ValueError("labels in index->name mapping must be either str or List[str]")
        out[key] = label
    return out


def map_class_to_label(probs: list, mapping: dict | None = None,
                       lbl_classes: list | None = None) -> list[dict]:
    """One ``{label: probability}`` per row of ``probs`` (class ids from ``lbl_classes``)."""
    if not isinstance(probs, list):
        raise TypeError("Convert classes to list before doing mapping")
    if mapping is not None and not isinstance(mapping, dict):
        raise TypeError("Mapping must be a dict")
    if lbl_classes is None:
        lbl_classes = itertools.repeat(range(len(probs[0])), len(probs))

    def label(cls: Any) -> str:
        return mapping[str(cls)] if mapping is not None else str(cls)

    return [{label(c): p for c, p in zip(classes, row)} for classes, row in zip(lbl_classes, probs)]


def get_yaml_config(yaml_file_path: str) -> dict:
    import yaml

    with open(yaml_file_path) as f:
        return yaml.safe_load(f) or {}


def deprecated(version: str, replacement: str = "",
               klass: type[Warning] = PendingDeprecationWarning) -> Callable:
    """Decorator: warn on each call that the function goes away in ``version``."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            warnings.warn(f"{func.__name__} is deprecated in {version} and moved to "
                          f"{replacement}", klass, stacklevel=2)
            return func(*args, **kwargs)

        return wrapper

    return decorate

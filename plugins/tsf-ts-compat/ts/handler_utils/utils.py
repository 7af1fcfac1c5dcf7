"""``send_intermediate_predict_response`` (streaming) and ``import_class``."""

from __future__ import annotations

import importlib
from typing import Any

from tsf.errors import NotImplementedByModel


def send_intermediate_predict_response(ret: list, req_id_map: dict, message: str, code: int,
                                       context: Any) -> None:
    """Send ``ret`` (one item per request) to the clients now, before the final answer."""
    send = getattr(context, "send_intermediate_predict_response", None)
    if send is None:
        raise NotImplementedByModel(
            "this tsf does not stream intermediate responses (its Context has no "
            "send_intermediate_predict_response); upgrade tsf-framework")
    return send(ret, req_id_map, message, code)


def import_class(class_name: str, module_prefix: str | None = None) -> type:
    """The class ``module.Class`` names (``module_prefix`` is prepended to the module)."""
    if not class_name:
        raise ImportError("class name is not defined")
    module_name, _, name = class_name.rpartition(".")
    if module_prefix:
        module = importlib.import_module(
            f"{module_prefix}.{module_name}" if module_name else module_prefix)
    elif module_name:
        module = importlib.import_module(module_name)
    else:
        raise ImportError("module name is not defined.")
    cls = getattr(module, name, None)
    if cls is None:
        raise ImportError(f"class:{name} not found in module:{module_name}.")
    return cls

"""Entry point: answers ``tsf_explain`` for handlers whose ``task`` it knows.

Imported in the front end too, so Captum and torch are imported only when a worker explains.
A handler's own ``tsf_explain`` runs before this one (the handler is registered last), and a
model whose handler declares an unknown task is left to other explainers (``None``).
"""

from __future__ import annotations

import importlib
from typing import Any

from tsf import hookimpl

EXPLAINERS = {
    "image_classification": "tsf_explain_captum.vision:explain_classification",
    "image_segmentation": "tsf_explain_captum.vision:explain_segmentation",
    "object_detection": "tsf_explain_captum.detection:explain_detection",
    "text_classification": "tsf_explain_captum.text:explain_text",
}


@hookimpl
def tsf_explain(context: Any, requests: list[dict]) -> list | None:
    ref = EXPLAINERS.get(getattr(context.handler, "task", None) or "")
    if ref is None:
        return None
    module_name, _, function = ref.partition(":")
    explain = getattr(importlib.import_module(module_name), function)
    return explain(context, context.handler, requests)

"""Autoscaling settings: the server's ``autoscale_*`` defaults overridden per model by
model-config.yaml's ``autoscale`` mapping (the autoscaler itself is
:mod:`tsf.serving.autoscale`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import BadRequest

_KEYS = {"target_queue_ms": "targetQueueMs", "scale_up_after_s": "scaleUpAfterS",
         "scale_down_idle_s": "scaleDownIdleS"}


@dataclass(frozen=True)
class AutoscaleSettings:
    """When to add and when to remove a worker."""

    target_queue_ms: float = 100.0
    scale_up_after_s: float = 2.0
    scale_down_idle_s: float = 30.0


def autoscale_settings(config: Any, model_config: Mapping[str, Any]) -> AutoscaleSettings:
    """Server defaults overridden by model-config's ``autoscale`` mapping (snake_case or
    camelCase keys); BadRequest for anything that is not a non-negative number."""
    values = {key: getattr(config, f"autoscale_{key}") for key in _KEYS}
    declared = model_config.get("autoscale")
    if declared is not None:
        if not isinstance(declared, dict):
            raise BadRequest("model-config autoscale must be a mapping of "
                             f"{', '.join(_KEYS)}")
        unknown = set(declared) - set(_KEYS) - set(_KEYS.values())
        if unknown:
            raise BadRequest(f"unknown model-config autoscale keys: {', '.join(sorted(unknown))}")
        for key, camel in _KEYS.items():
            for name in (camel, key):
                if name in declared:
                    values[key] = declared[name]
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise BadRequest(f"autoscale {key} must be a number >= 0, got {value!r:.50}")
    return AutoscaleSettings(**{k: float(v) for k, v in values.items()})

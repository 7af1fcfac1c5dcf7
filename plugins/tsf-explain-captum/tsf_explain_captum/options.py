"""What an explanation request asks for, and the model's explanation settings.

Model settings come from the ``explain:`` section of model-config.yaml: ``n_steps`` (16),
``max_n_steps`` (256), ``internal_batch_size`` (8), ``max_side`` (512, longest side used to
attribute an image for a PNG), ``alpha`` (0.6, heatmap opacity) and ``layer`` (text models: the
embedding layer's dotted name).  A request chooses ``target`` (class index or label; for a
detector, the index of a box in the prediction) and the output format: ``?format=png`` or
``Accept: image/png`` for a heatmap picture.  ``target`` and ``n_steps`` may be query
parameters or keys of a JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tsf.errors import BadRequest

DEFAULTS = {"n_steps": 16, "max_n_steps": 256, "internal_batch_size": 8, "max_side": 512,
            "alpha": 0.6, "layer": None}


@dataclass
class ExplainRequest:
    """One request's choices."""

    target: str | None
    png: bool
    n_steps: int


def model_settings(context: Any) -> dict:
    section = context.model_config.get("explain") or {}
    return {**DEFAULTS, **(section if isinstance(section, dict) else {})}


def _field(request: dict, name: str) -> Any:
    for value in (request.get("body"), request.get("data")):
        if isinstance(value, dict) and name in value:
            return value[name]
    return request.get(name)


def parse_request(context: Any, request: dict, index: int, settings: dict) -> ExplainRequest:
    params = context.get_request_params(index)
    target = params.get("target", _field(request, "target"))
    if isinstance(target, bytes):
        target = target.decode("utf-8", "replace")
    accept = (context.get_request_header(index, "accept") or "").lower()
    png = params.get("format", "").lower() == "png" or "image/png" in accept
    raw_steps = params.get("n_steps", _field(request, "n_steps"))
    n_steps = int(settings["n_steps"])
    if raw_steps is not None:
        try:
            n_steps = int(raw_steps)
        except (TypeError, ValueError):
            raise request_error(context, index, f"n_steps must be an integer, got {raw_steps!r}")
        if not 1 <= n_steps <= int(settings["max_n_steps"]):
            raise request_error(context, index, f"n_steps must be between 1 and "
                                f"{settings['max_n_steps']} (explain.max_n_steps)")
    return ExplainRequest(None if target is None else str(target), png, n_steps)


def resolve_class(context: Any, index: int, target: str | None, labels: Any, classes: int,
                  default: int) -> int:
    """A class index from a request's target (index or label name), or ``default``."""
    if target is None:
        return default
    found = labels.index_of(target) if labels is not None else None
    if found is None and target.strip().lstrip("-").isdigit():
        found = int(target)
    if found is None or not 0 <= found < classes:
        raise request_error(context, index, f"target {target!r} is not a class of this model "
                            f"(an index from 0 to {classes - 1}, or a label)")
    return found


def request_error(context: Any, index: int, why: str) -> BadRequest:
    return BadRequest(f"request {context.get_request_id(index) or index}: {why}")

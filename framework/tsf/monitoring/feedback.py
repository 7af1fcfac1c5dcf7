"""The body of ``POST /feedback/{model}``, checked: one item or a list of them::

    {"id": "<request id or inference id>", "label": 1, "groups": {"region": "eu"}}

``label`` is a string, number or boolean (compared with predictions as text: ``1``, ``1.0`` and
``"1"`` are one class); ``groups`` is optional, a flat object of at most 16 keys with string,
number or boolean values.  At most 1000 items per call.
"""

from __future__ import annotations

from typing import Any

from ..config.capture import label_text
from ..errors import BadRequest

MAX_ITEMS = 1000
MAX_GROUPS = 16
MAX_TEXT = 256


def _item(item: Any, where: str) -> tuple[str, str, dict[str, str]]:
    if not isinstance(item, dict):
        raise BadRequest(f'{where} must be an object {{"id", "label", "groups"}}, got '
                         f"{type(item).__name__}")
    unknown = sorted(set(item) - {"id", "label", "groups"})
    if unknown:
        raise BadRequest(f"{where}.{unknown[0]} is not a feedback field (id, label, groups)")
    ident = item.get("id")
    if not isinstance(ident, str) or not ident or len(ident) > MAX_TEXT:
        raise BadRequest(f"{where}.id must be a request id or inference id (a non-empty "
                         f"string of at most {MAX_TEXT} characters), got {ident!r:.60}")
    label = item.get("label")
    if isinstance(label, (dict, list)) or label is None or \
            (isinstance(label, str) and not 0 < len(label) <= MAX_TEXT):
        raise BadRequest(f"{where}.label must be a string, number or boolean, got "
                         f"{label!r:.60}")
    groups = item.get("groups") or {}
    if not isinstance(groups, dict) or len(groups) > MAX_GROUPS:
        raise BadRequest(f"{where}.groups must be an object of at most {MAX_GROUPS} keys")
    checked = {}
    for key, value in groups.items():
        if not key or len(key) > 64 or isinstance(value, (dict, list)) or value is None or \
                len(label_text(value)) > MAX_TEXT:
            raise BadRequest(f"{where}.groups.{key[:64]} must be a string, number or boolean")
        checked[key] = label_text(value)
    return ident, label_text(label), checked


def parse_feedback(document: Any) -> list[tuple[str, str, dict[str, str]]]:
    """``[(id, label, groups)]`` of a feedback body; BadRequest naming what is wrong."""
    if isinstance(document, list):
        if not document or len(document) > MAX_ITEMS:
            raise BadRequest(f"a feedback list must hold 1 to {MAX_ITEMS} items, got "
                             f"{len(document)}")
        return [_item(item, f"item {i}") for i, item in enumerate(document)]
    return [_item(document, "feedback")]

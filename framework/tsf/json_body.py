"""Reading a request body that must be a JSON object, with a 400 that says what was wrong."""

from __future__ import annotations

import json

from .errors import BadRequest


def json_object(data: bytes | str, what: str = "request body") -> dict:
    """``data`` parsed as JSON; BadRequest unless it is valid JSON holding an object."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return document

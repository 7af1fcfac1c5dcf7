"""Parsing JSON from clients: bounded nesting depth, and a 400 that says what was wrong.

Every place that parses JSON a client sent (request bodies, register bodies, KServe, OIP, the
worker's part decoding, the base handler) goes through :func:`load_json`.  A document nested
deeper than :data:`MAX_JSON_DEPTH` is refused before the recursive parser sees it, so a small
body of a thousand ``[`` can neither raise ``RecursionError`` nor kill a worker.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

from .errors import BadRequest

MAX_JSON_DEPTH = 100

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# opening brackets become +1 and closing ones -1 once read as signed bytes
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth(data: bytes) -> int:
    """How deeply the arrays and objects of the JSON text ``data`` nest (0 for a scalar).

    Counts brackets outside strings; an unbalanced text counts its unclosed brackets.
    """
    if data.count(b"[") + data.count(b"{") == 0:
        return 0
    text = _STRING.sub(b"", data) if b'"' in data else data
    brackets = text.translate(None, _NOT_BRACKETS)
    return max(accumulate(array("b", brackets.translate(_SIGNS))), default=0)


def load_json(data: bytes | bytearray | str, what: str = "request body") -> Any:
    """``data`` parsed as JSON; BadRequest if it is not valid JSON or nests too deeply."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    # fewer brackets than the limit cannot nest past it: skip the scan for most bodies
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and \
            json_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"{what} is not accepted: JSON nested more than {MAX_JSON_DEPTH} "
                         "levels deep")
    try:
        return json.loads(data)
    except RecursionError:  # cannot happen under the depth limit; never let it escape
        raise BadRequest(f"{what} is not accepted: JSON nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


def json_object(data: bytes | str, what: str = "request body") -> dict:
    """``data`` parsed as JSON; BadRequest unless it is valid JSON holding an object."""
    document = load_json(data, what)
    if not isinstance(document, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return document

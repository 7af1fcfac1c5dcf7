"""The content types SageMaker's inference toolkit decodes and encodes by default.

Requests: ``application/json`` (a nested list), ``text/csv`` (rows of numbers) and
``application/x-npy`` (a NumPy ``.npy`` file, pickles refused) become NumPy arrays.  Answers are
encoded for the first type of ``Accept`` that is one of those three.  Anything else is a 415
(request) or 406 (answer) error.  Runs in the worker (NumPy comes with torch).
"""

from __future__ import annotations

import io
import json
from typing import Any

from ..errors import BadRequest, TsfError
from ..json_body import load_json

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ANY = "*/*"
UTF8_TYPES = (JSON, CSV)
SUPPORTED = (JSON, CSV, NPY)


class UnsupportedContentType(TsfError):
    status, type = 415, "UnsupportedMediaTypeException"


class NotAcceptable(TsfError):
    status, type = 406, "NotAcceptableException"


def media_type(header: str | None) -> str:
    """``text/csv`` from ``text/csv; charset=utf-8`` (lower case, no parameters)."""
    return (header or "").split(";", 1)[0].strip().lower()


def parse_accept(accept: str) -> list[str]:
    """The media types an ``Accept`` header lists, in its order."""
    return [media_type(part) for part in accept.split(",") if part.strip()]


def decode(data: Any, content_type: str | None) -> Any:
    """A request body (``str`` for JSON and CSV, else ``bytes``) as a NumPy array."""
    import numpy as np

    media = media_type(content_type)
    try:
        if media == JSON:  # bounded nesting: a deep body is a 400, never a RecursionError
            return np.array(load_json(data, f"the {media} body"))
        if media == CSV:
            text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            return np.genfromtxt(io.StringIO(text), delimiter=",", dtype=None)
        if media == NPY:
            raw = data.encode() if isinstance(data, str) else bytes(data)
            return np.load(io.BytesIO(raw), allow_pickle=False)
    except BadRequest:
        raise
    except (ValueError, TypeError, OSError) as exc:
        raise BadRequest(f"cannot decode the {media} body: {exc}") from None
    raise UnsupportedContentType(f"content type {content_type or '(none)'!r} is not supported; "
                                 f"send one of {', '.join(SUPPORTED)}")


def encode(value: Any, content_type: str) -> bytes | str:
    """``value`` (array-like) in ``content_type`` (one of :data:`SUPPORTED`)."""
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if content_type == JSON:
        return json.dumps(value.tolist() if hasattr(value, "tolist") else value)
    array = np.asarray(value)
    if content_type == CSV:
        out = io.StringIO()
        np.savetxt(out, array if array.ndim else array.reshape(1), delimiter=",", fmt="%s")
        return out.getvalue()
    if content_type == NPY:
        out_bytes = io.BytesIO()
        np.save(out_bytes, array, allow_pickle=False)
        return out_bytes.getvalue()
    raise NotAcceptable(f"cannot answer in {content_type!r}")


def encode_for(value: Any, accept: str) -> tuple[bytes | str, str]:
    """Encode for the first supported type ``accept`` lists; the body and its content type."""
    for media in parse_accept(accept):
        if media in SUPPORTED:
            return encode(value, media), media
    raise NotAcceptable(f"none of the accepted types {accept!r} can be produced; accept one of "
                        f"{', '.join(SUPPORTED)}")

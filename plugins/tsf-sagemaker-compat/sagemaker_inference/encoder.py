"""Predictions to response bodies (``sagemaker_inference.encoder``)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from . import content_types, errors

SUPPORTED_CONTENT_TYPES = {content_types.JSON, content_types.CSV, content_types.NPY}


def _to_list(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return json.JSONEncoder().default(value)


def _array_to_json(array_like: Any) -> str:
    return json.dumps(array_like, default=_to_list)


def _array_to_csv(array_like: Any) -> str:
    out = io.StringIO()
    np.savetxt(out, array_like, delimiter=",", fmt="%s")
    return out.getvalue()


def _array_to_npy(array_like: Any) -> bytes:
    out = io.BytesIO()
    np.save(out, array_like, allow_pickle=False)
    return out.getvalue()


_encoder_map = {
    content_types.NPY: _array_to_npy,
    content_types.CSV: _array_to_csv,
    content_types.JSON: _array_to_json,
}


def encode(array_like: Any, content_type: str) -> str | bytes:
    """``array_like`` as a body of ``content_type`` (JSON, CSV or NPY)."""
    encoder = _encoder_map.get((content_type or "").split(";", 1)[0].strip().lower())
    if encoder is None:
        raise errors.UnsupportedFormatError(content_type)
    return encoder(array_like)

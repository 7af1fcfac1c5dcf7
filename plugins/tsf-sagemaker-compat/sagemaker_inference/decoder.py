"""Request bodies to NumPy arrays (``sagemaker_inference.decoder``).

Unlike the toolkit: JSON nested deeper than tsf's limit (or not JSON) answers 400 instead of
failing the worker's request with a RecursionError (500); ``.npy`` bodies are read without
pickles (a pickle in a request body would run code in the worker); a media type's parameters
(``application/json; charset=utf-8``) do not make it unsupported.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from tsf.errors import BadRequest
from tsf.json_body import load_json

from . import content_types, errors


class UndecodableBody(errors.GenericInferenceToolkitError, ValueError):
    """The body is not what its content type says: answered 400."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def _text(data: Any) -> str:
    if isinstance(data, (bytes, bytearray)):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise UndecodableBody("the body is not UTF-8 text") from None
    return data


def _json_to_numpy(string_like: Any, dtype: Any = None) -> np.ndarray:
    try:
        data = load_json(string_like, "the JSON body")
    except BadRequest as exc:
        raise UndecodableBody(exc.message) from None
    return np.array(data, dtype=dtype)


def _csv_to_numpy(string_like: Any, dtype: Any = None) -> np.ndarray:
    try:
        return np.genfromtxt(io.StringIO(_text(string_like)), dtype=dtype, delimiter=",")
    except ValueError as exc:
        raise UndecodableBody(f"the CSV body cannot be read: {exc}") from None


def _npy_to_numpy(npy_array: Any) -> np.ndarray:
    raw = npy_array.encode() if isinstance(npy_array, str) else bytes(npy_array)
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UndecodableBody(f"the .npy body cannot be read (pickles are refused): "
                              f"{exc}") from None


def _npz_to_sparse(npz_bytes: Any) -> Any:
    try:
        import scipy.sparse
    except ImportError:
        raise errors.GenericInferenceToolkitError(
            415, f"{content_types.NPZ} bodies need scipy in the model's environment") from None
    try:
        return scipy.sparse.load_npz(io.BytesIO(bytes(npz_bytes)))
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise UndecodableBody(f"the .npz body cannot be read: {exc}") from None


_decoder_map = {
    content_types.NPY: _npy_to_numpy,
    content_types.CSV: _csv_to_numpy,
    content_types.JSON: _json_to_numpy,
    content_types.NPZ: _npz_to_sparse,
}


def decode(obj: Any, content_type: str) -> Any:
    """``obj`` (a request body) as a NumPy array (a SciPy sparse matrix for ``.npz``)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    decoder = _decoder_map.get(media)
    if decoder is None:
        raise errors.UnsupportedFormatError(content_type)
    return decoder(obj)

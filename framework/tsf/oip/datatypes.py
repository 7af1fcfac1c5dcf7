"""OIP datatypes: element sizes, the byte layout of the binary extension, and JSON conversion.

Binary tensors are little-endian and row-major.  ``BYTES`` elements are each a 4-byte
little-endian length followed by that many bytes.  Nothing here imports torch or numpy: the
front end converts between binary and JSON with :mod:`array` and :mod:`struct`.
"""

from __future__ import annotations

import array
import base64
import math
import struct
import sys
from typing import Any

from ..errors import BadRequest

# datatype -> struct/array format code (None for BYTES)
FORMATS: dict[str, str | None] = {
    "BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q",
    "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q",
    "FP16": "e", "FP32": "f", "FP64": "d", "BYTES": None,
}
_ARRAY_CODES = {"B": "B", "H": "H", "I": "I", "Q": "Q", "b": "b", "h": "h", "i": "i", "q": "q",
                "f": "f", "d": "d"}
_LENGTH = struct.Struct("<I")


def check_datatype(datatype: Any) -> str:
    if not isinstance(datatype, str) or datatype not in FORMATS:
        raise BadRequest(f"unknown datatype {datatype!r}; expected one of "
                         f"{', '.join(FORMATS)}")
    return datatype


def check_shape(shape: Any, name: str) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    return shape


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def item_size(datatype: str) -> int | None:
    """Bytes per element, or ``None`` for BYTES (variable length)."""
    code = FORMATS[datatype]
    return struct.calcsize(code) if code else None


def split_bytes_elements(raw: bytes | memoryview, name: str = "") -> list[bytes]:
    """The elements of a binary BYTES tensor."""
    view = memoryview(raw)
    out, offset = [], 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise BadRequest(f"tensor {name!r}: truncated BYTES element length")
        (size,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + size > len(view):
            raise BadRequest(f"tensor {name!r}: BYTES element runs past the end of the data")
        out.append(bytes(view[offset:offset + size]))
        offset += size
    return out


def join_bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def raw_to_list(datatype: str, raw: bytes) -> list:
    """A binary tensor as the flat JSON list OIP answers with (BYTES as UTF-8 text or base64)."""
    code = FORMATS[datatype]
    if code is None:
        return [_text(item) for item in split_bytes_elements(raw)]
    if code == "?":
        return [b != 0 for b in raw]
    if code == "e":
        return list(struct.unpack(f"<{len(raw) // 2}e", raw))
    values = array.array(_ARRAY_CODES[code])
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def _text(item: bytes) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(item).decode()


def contents_field(datatype: str) -> str:
    """The ``InferTensorContents`` field of the gRPC protocol that holds this datatype."""
    return {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
            "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
            "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
            "FP16": "fp32_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
            "BYTES": "bytes_contents"}[datatype]

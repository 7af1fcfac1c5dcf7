"""OIP byte layouts in the front end (no torch): binary tensors to JSON lists, BYTES framing."""

from __future__ import annotations

import struct

import pytest

from tsf.errors import BadRequest
from tsf.oip.datatypes import (check_datatype, item_size, join_bytes_elements, raw_to_list,
                               split_bytes_elements)
from tsf.oip.requests import parse_http


@pytest.mark.parametrize("datatype, code, values", [
    ("BOOL", "?", [True, False, True]),
    ("UINT8", "B", [0, 255]), ("UINT16", "H", [65535]), ("UINT32", "I", [2**32 - 1]),
    ("UINT64", "Q", [2**64 - 1]), ("INT8", "b", [-128]), ("INT16", "h", [-32768, 1]),
    ("INT32", "i", [-(2**31)]), ("INT64", "q", [-(2**63), 2**62]),
    ("FP16", "e", [1.5, -2.0, 65504.0]), ("FP32", "f", [0.25, -8.0]), ("FP64", "d", [1e300]),
])
def test_little_endian_binary_becomes_a_flat_list(datatype, code, values):
    raw = struct.pack(f"<{len(values)}{code}", *values)
    assert item_size(datatype) == struct.calcsize(code)
    assert raw_to_list(datatype, raw) == values


def test_bytes_elements_are_length_prefixed():
    items = [b"", b"a", "\u00e9".encode(), b"\x00\xff"]
    raw = join_bytes_elements(items)
    assert raw[:4] == b"\x00\x00\x00\x00" and raw[4:9] == b"\x01\x00\x00\x00a"
    assert split_bytes_elements(raw) == items
    assert raw_to_list("BYTES", raw) == ["", "a", "\u00e9", "AP8="]  # not UTF-8: base64
    with pytest.raises(BadRequest, match="runs past"):
        split_bytes_elements(b"\x05\x00\x00\x00abc")
    with pytest.raises(BadRequest, match="truncated"):
        split_bytes_elements(b"\x01\x00")


def test_unknown_datatypes_are_refused():
    assert check_datatype("FP16") == "FP16"
    for bad in ("fp32", "BF16", None, 3):
        with pytest.raises(BadRequest, match="unknown datatype"):
            check_datatype(bad)


def test_binary_inputs_are_cut_from_the_body_in_order():
    head = (b'{"inputs":[{"name":"a","datatype":"INT32","shape":[2],'
            b'"parameters":{"binary_data_size":8}},'
            b'{"name":"b","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":6}},'
            b'{"name":"c","datatype":"FP32","shape":[1],"data":[2.5]}],'
            b'"outputs":[{"name":"y","parameters":{"binary_data":true}},{"name":"z"}]}')
    body = head + struct.pack("<2i", 7, -7) + join_bytes_elements([b"hi"])
    request = parse_http(body, str(len(head)))
    assert [p.name for p in request.parts] == ["a", "b", "c"]
    assert [p.encoding for p in request.parts] == ["raw", "raw", "json"]
    assert request.parts[0].data == struct.pack("<2i", 7, -7) and request.parts[2].data == b"[2.5]"
    assert [(o.name, o.binary) for o in request.outputs] == [("y", True), ("z", False)]
    with pytest.raises(BadRequest, match="belong to no input"):
        parse_http(body + b"extra", str(len(head)))
    with pytest.raises(BadRequest, match="needs 8"):
        parse_http(head.replace(b'"binary_data_size":8', b'"binary_data_size":4')
                   + body[len(head):], str(len(head)))
    with pytest.raises(BadRequest, match="outside"):
        parse_http(body, str(len(body) + 1))

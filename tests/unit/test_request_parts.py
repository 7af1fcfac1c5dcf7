"""Parsing an HTTP request into the worker's request message (``request_parts``), no server."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from tsf.errors import BadRequest
from tsf.server.request_body import request_parts
from tsf.workers.messages import EXPLAIN, PREDICT, Part


def http_request(body: bytes = b"", content_type: str | None = None,
                 uri: str = "/predictions/m", **headers: str) -> HTTPServerRequest:
    fields = HTTPHeaders({"Host": "127.0.0.1"})
    if content_type is not None:
        fields["Content-Type"] = content_type
    for name, value in headers.items():
        fields[name.replace("_", "-")] = value
    return HTTPServerRequest(start_line=RequestStartLine("POST", uri, "HTTP/1.1"),
                             headers=fields, body=body)


def multipart(boundary: str, *sections: tuple[str, str | None, str | None, bytes]) -> bytes:
    """A multipart/form-data body of (field name, file name, content type, data) sections."""
    out = b""
    for name, filename, ctype, data in sections:
        disposition = f'form-data; name="{name}"' + \
            (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_a_json_body_is_one_part_named_body_passed_without_copy():
    body = b'{"data": [1, 2]}'
    message = request_parts(http_request(body, "application/json"), body)
    assert message.parts == [Part("body", body, "application/json")]
    assert message.parts[0].data is body
    assert message.kind == PREDICT and message.params == {}
    assert message.headers["Content-Type"] == "application/json"


def test_raw_bytes_keep_their_content_type_or_none():
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    [part] = request_parts(http_request(png, "image/png"), png).parts
    assert (part.name, part.ctype, part.data) == ("body", "image/png", png)
    [part] = request_parts(http_request(png), png).parts
    assert (part.ctype, part.data) == ("", png)


def test_the_kind_is_set_on_the_message():
    assert request_parts(http_request(b"x"), b"x", EXPLAIN).kind == EXPLAIN


def test_multipart_fields_and_several_files_become_one_part_each():
    body = multipart("b0und",
                     ("label", None, None, b"cat"),
                     ("images", "a.png", "image/png", b"\x89PNG-a"),
                     ("images", "b.jpg", "image/jpeg", b"\xff\xd8-b"),
                     ("mask", "m.bin", "application/octet-stream", b"\x00\x01"),
                     ("note", None, None, "h\u00e9".encode()))
    message = request_parts(http_request(body, "multipart/form-data; boundary=b0und"), body)
    assert [(p.name, p.ctype, p.filename, p.data) for p in message.parts] == [
        ("label", "text/plain", None, b"cat"),
        ("note", "text/plain", None, "h\u00e9".encode()),
        ("images", "image/png", "a.png", b"\x89PNG-a"),
        ("images", "image/jpeg", "b.jpg", b"\xff\xd8-b"),
        ("mask", "application/octet-stream", "m.bin", b"\x00\x01"),
    ]


def test_urlencoded_fields_are_text_parts_repeated_names_kept():
    body = b"a=1&b=x+y&a=2"
    message = request_parts(http_request(body, "application/x-www-form-urlencoded"), body)
    assert [(p.name, p.ctype, p.data) for p in message.parts] == [
        ("a", "text/plain", b"1"), ("a", "text/plain", b"2"), ("b", "text/plain", b"x y")]


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data", b"no boundary declared"),
    ("multipart/form-data; boundary=zz", b"no boundary in the body"),
    ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="a"'
                                         b"\r\n\r\n1\r\n"),  # no final boundary
])
def test_a_malformed_multipart_body_is_a_bad_request(content_type, body):
    with pytest.raises(BadRequest, match="malformed multipart/form-data"):
        request_parts(http_request(body, content_type), body)


def test_query_parameters_are_text_and_the_last_value_wins():
    message = request_parts(http_request(b"x", uri="/predictions/m?a=1&b=%C3%A9&a=2"), b"x")
    assert message.params == {"a": "2", "b": "\u00e9"}


def test_the_request_id_is_kept_or_generated():
    kept = request_parts(http_request(b"x", X_Request_Id="client-42"), b"x")
    assert kept.id == "client-42" and kept.headers["X-Request-Id"] == "client-42"
    first, second = (request_parts(http_request(b"x"), b"x").id for _ in range(2))
    assert len(first) == 32 and int(first, 16) >= 0 and first != second

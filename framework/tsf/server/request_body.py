"""Reading request bodies under ``max_request_size`` and splitting them into worker parts.

Bodies are streamed: a declared ``Content-Length`` over the limit is refused before any byte is
read, and a chunked body is counted as it arrives and dropped once it passes the limit, so an
oversize upload never sits in memory.  The client gets a 413 JSON error either way.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Iterator

import tornado.httputil
import tornado.web

from ..errors import BadRequest, PayloadTooLarge, TsfError
from ..outcome import Outcome
from .errors import BaseHandler

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@tornado.web.stream_request_body
class StreamingBodyHandler(BaseHandler):
    """A handler whose body is collected under the server's ``max_request_size``."""

    max_size: int = 6553500
    public = False  # health probes set this: never behind the token

    def initialize(self, **kwargs: Any) -> None:
        self.services = kwargs
        self.max_size = kwargs["config"].max_request_size
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False

    def prepare(self) -> None:
        tokens = self.services.get("tokens")
        if tokens is not None and tokens.enabled and not self.public:
            tokens.check(self.services.get("api", ""), self.request.headers.get("Authorization"))
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_size:
            self._too_large = True
            raise self.too_large(int(declared))

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._size += len(chunk)
        if self._size > self.max_size:
            self._too_large = True
            self._chunks.clear()
            return
        self._chunks.append(chunk)

    @contextlib.contextmanager
    def observed(self, route: str, model: str, kind: str, label_version: str
                 ) -> Iterator[Outcome]:
        """Trace and count one request sent to a model, whatever its outcome.

        The body sets ``outcome.model_version`` and ``outcome.code``; a TsfError sets the code
        from its status.  The span (if tracing is on) and the request metrics close here.
        """
        tracing = self.services.get("tracing")
        span = None
        if tracing is not None and tracing.enabled:
            span = tracing.start_request(self.request, route, model)
            self.trace_id = tracing.trace_id(span)
            self.set_header("X-Trace-Id", self.trace_id)
        outcome = Outcome(span, self.services.get("metrics"))
        try:
            yield outcome
        except TsfError as exc:
            outcome.code = exc.status
            raise
        finally:
            outcome.close(self.services, kind, label_version)

    def too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body of {size} bytes exceeds max_request_size "
                               f"({self.max_size} bytes)")

    def body(self) -> bytes:
        if self._too_large:
            raise self.too_large(self._size)
        if len(self._chunks) == 1:
            return self._chunks[0]
        return b"".join(self._chunks)


def request_parts(request: tornado.httputil.HTTPServerRequest, body: bytes
                  ) -> tuple[dict, list[bytes]]:
    """Request metadata for the worker and the raw parts, one blob per part."""
    ctype = request.headers.get("Content-Type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    parts: list[dict] = []
    blobs: list[bytes] = []
    if media in FORM_TYPES:
        args: dict[str, list[bytes]] = {}
        files: dict[str, list[tornado.httputil.HTTPFile]] = {}
        tornado.httputil.parse_body_arguments(ctype, body, args, files, request.headers)
        if not args and not files and body:
            raise BadRequest(f"malformed {media} body")
        for name, values in args.items():
            for value in values:
                parts.append({"name": name, "ctype": "text/plain"})
                blobs.append(value)
        for name, uploads in files.items():
            for upload in uploads:
                parts.append({"name": name, "ctype": upload.content_type or
                              "application/octet-stream", "filename": upload.filename})
                blobs.append(upload.body)
    else:
        parts.append({"name": "body", "ctype": ctype})
        blobs.append(body)
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    meta = {"id": request_id, "headers": dict(request.headers.get_all()), "parts": parts}
    if request.query_arguments:
        meta["params"] = query_params(request)
    return meta, blobs


def query_params(request: tornado.httputil.HTTPServerRequest) -> dict[str, str]:
    """The URL's query parameters as text, the last value of a repeated one winning."""
    return {key: values[-1].decode("utf-8", "replace")
            for key, values in request.query_arguments.items()}

"""Reading request bodies under ``max_request_size`` and splitting them into worker parts
(a :class:`tsf.workers.messages.Request`).

Every API route streams its body through :class:`BoundedBody`, and nothing is read before the
request is known to be acceptable: the token, the method and a declared ``Content-Length`` over
the limit are checked first (:class:`~tsf.server.api_handler.ApiHandler`).  A chunked body is
counted as it arrives and answered 413 the moment it passes the limit (the connection is then
closed, the rest unread), so an oversize upload never sits in memory.  A body that stalls for
``body_idle_timeout`` seconds is answered 408 and its connection closed.  Only routes that take
a body keep its bytes; the others drop them under the same limits.
"""

from __future__ import annotations

import time
from typing import Any

import tornado.httputil
import tornado.ioloop

from ..dataplane import derive_request_id
from ..errors import BadRequest, PayloadTooLarge, RequestTimeout, TsfError
from ..workers.messages import PREDICT, Part, Request

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class BoundedBody:
    """Mixed into a ``stream_request_body`` handler: its body read under ``max_request_size``
    (413) and ``body_idle_timeout`` (408), its bytes kept only when ``keeps_body``."""

    keeps_body = False

    def limit_body(self, config: Any) -> None:
        """Take the limits of ``config``; called when the handler is made."""
        self.max_size = config.max_request_size
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._idle_timeout = float(getattr(config, "body_idle_timeout", 0) or 0)
        self._last_data = 0.0
        self._idle_timer: object | None = None

    def expect_body(self) -> None:
        """Refuse a declared body over the limit (413) before any of it is read; start the idle
        timer when a body is coming."""
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_size:
            self._too_large = True
            raise self.too_large(int(declared))
        if self._idle_timeout > 0 and (declared not in (None, "0") or
                                       "Transfer-Encoding" in self.request.headers) \
                and not self._arrived_with_headers(declared):
            self._last_data = time.monotonic()
            self._arm_idle_timer(self._idle_timeout)

    def _arrived_with_headers(self, declared: str | None) -> bool:
        """Whether the whole declared body is already read from the socket (it came with the
        headers, as a small body does): Tornado hands it over without waiting, so it cannot
        stall and needs no idle timer."""
        stream = getattr(self.request.connection, "stream", None)
        buffered = getattr(stream, "_read_buffer_size", 0)  # Tornado's bytes read, not consumed
        return declared is not None and declared.isdigit() and buffered >= int(declared)

    def data_received(self, chunk: bytes) -> None:
        self._last_data = time.monotonic()
        if self._too_large:
            return
        self._size += len(chunk)
        if self._size > self.max_size:
            self._too_large = True
            self._chunks.clear()
            self._refuse(self.too_large(self._size))
            return
        if self.keeps_body:
            self._chunks.append(chunk)

    def _refuse(self, error: TsfError) -> None:
        """Answer ``error`` while the body is still arriving; Tornado then closes the connection."""
        self._cancel_idle_timer()
        if not self._finished:
            self.send_error(error.status, exc_info=(type(error), error, None))

    def _arm_idle_timer(self, delay: float) -> None:
        self._idle_timer = tornado.ioloop.IOLoop.current().call_later(delay, self._body_idle)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._idle_timer)
            self._idle_timer = None

    def _body_idle(self) -> None:
        self._idle_timer = None
        # Tornado resolves _body_future once the whole body has arrived
        if self._finished or self.request._body_future.done():
            return
        stalled = time.monotonic() - self._last_data
        if stalled < self._idle_timeout:
            self._arm_idle_timer(self._idle_timeout - stalled)
            return
        self._refuse(RequestTimeout(f"request body stalled for {self._idle_timeout:g} s "
                                    "(body_idle_timeout)"))

    def on_connection_close(self) -> None:
        """The client left: stop the idle timer."""
        self._cancel_idle_timer()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._cancel_idle_timer()
        super().on_finish()

    def too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body of {size} bytes exceeds max_request_size "
                               f"({self.max_size} bytes)")


def request_parts(request: tornado.httputil.HTTPServerRequest, body: bytes,
                  kind: str = PREDICT) -> Request:
    """The message a worker gets for an HTTP request: a form's fields and files as parts,
    any other body as one part named ``body``."""
    ctype = request.headers.get("Content-Type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    parts: list[Part] = []
    if media in FORM_TYPES:
        args: dict[str, list[bytes]] = {}
        files: dict[str, list[tornado.httputil.HTTPFile]] = {}
        try:
            tornado.httputil.parse_body_arguments(ctype, body, args, files, request.headers)
        except tornado.httputil.HTTPInputError as exc:
            raise BadRequest(f"malformed {media} body: {exc}") from None
        if not args and not files and body:
            raise BadRequest(f"malformed {media} body")
        for name, values in args.items():
            for value in values:
                parts.append(Part(name, value, "text/plain"))
        for name, uploads in files.items():
            for upload in uploads:
                parts.append(Part(name, upload.body,
                                  upload.content_type or "application/octet-stream",
                                  upload.filename))
    else:
        parts.append(Part("body", body, ctype))
    request_id = derive_request_id(request.headers.get("X-Request-Id"))
    return Request(request_id, parts, dict(request.headers.get_all()),
                   query_params(request) if request.query_arguments else {}, kind)


def query_params(request: tornado.httputil.HTTPServerRequest) -> dict[str, str]:
    """The URL's query parameters as text, the last value of a repeated one winning."""
    return {key: values[-1].decode("utf-8", "replace")
            for key, values in request.query_arguments.items()}

"""Reading request bodies under ``max_request_size`` and splitting them into worker parts.

Bodies are streamed, and nothing is read before the request is known to be acceptable: the
token, the method and a declared ``Content-Length`` over the limit are checked first.  A chunked
body is counted as it arrives and answered 413 the moment it passes the limit (the connection is
then closed, the rest unread), so an oversize upload never sits in memory.  A body that stalls
for ``body_idle_timeout`` seconds is answered 408 and its connection closed.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import tornado.httputil
import tornado.ioloop
import tornado.web

from ..batching import Job
from ..errors import BadRequest, PayloadTooLarge, RequestTimeout, TsfError
from ..outcome import Outcome
from ..request_id import new_request_id
from ..traffic import MODEL_VERSION_HEADER
from .errors import BaseHandler

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@tornado.web.stream_request_body
class StreamingBodyHandler(BaseHandler):
    """A handler whose body is collected under the server's ``max_request_size``."""

    public = False  # health probes set this: never behind the token

    def initialize(self, **kwargs: Any) -> None:
        self.services = kwargs
        self.max_size = kwargs["config"].max_request_size
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._jobs: list[Job] = []
        self._idle_timeout = float(getattr(kwargs["config"], "body_idle_timeout", 0) or 0)
        self._last_data = 0.0
        self._idle_timer: object | None = None

    def prepare(self) -> None:
        self.refuse_when_stopping()
        tokens = self.services.get("tokens")
        if tokens is not None and tokens.enabled and not self.public:
            tokens.check(self.services.get("api", ""), self.request.headers.get("Authorization"))
        method = getattr(type(self), self.request.method.lower(), None)
        if method is tornado.web.RequestHandler._unimplemented_method:
            raise tornado.web.HTTPError(405)
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
        """The client left: stop the idle timer and abandon this request's queued jobs."""
        self._cancel_idle_timer()
        super().on_connection_close()
        for job in self._jobs:
            job.abandon()
        self._jobs.clear()

    def on_finish(self) -> None:
        self._cancel_idle_timer()
        super().on_finish()
        # A job holds this handler (its on_partial): without the list, the two are freed at
        # once rather than left for the cycle collector, whose sweeps of every request's
        # Tornado objects cost more than the rest of the metrics path.
        self._jobs.clear()

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

    def submit(self, model: str, version: str | None, kind: str, meta: dict,
               blobs: list[bytes], span: Any = None, workflow: str | None = None
               ) -> tuple[Any, Job]:
        """Queue one request for a model; it is abandoned if this client disconnects."""
        mv, job = self.services["manager"].submit(model, version, kind, meta, blobs, span,
                                                  workflow)
        self._jobs.append(job)
        self.set_header(MODEL_VERSION_HEADER, mv.version)
        return mv, job

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
        try:
            tornado.httputil.parse_body_arguments(ctype, body, args, files, request.headers)
        except tornado.httputil.HTTPInputError as exc:
            raise BadRequest(f"malformed {media} body: {exc}") from None
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
    request_id = request.headers.get("X-Request-Id") or new_request_id()
    meta = {"id": request_id, "headers": dict(request.headers.get_all()), "parts": parts}
    if request.query_arguments:
        meta["params"] = query_params(request)
    return meta, blobs


def query_params(request: tornado.httputil.HTTPServerRequest) -> dict[str, str]:
    """The URL's query parameters as text, the last value of a repeated one winning."""
    return {key: values[-1].decode("utf-8", "replace")
            for key, values in request.query_arguments.items()}

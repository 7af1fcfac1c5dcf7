"""JSON answers for every HTTP route, and the one place where exceptions become HTTP error
responses ``{"code", "type", "message"}``.

:class:`JsonHandler` is the root of tsf's Tornado handlers (it also counts each request open for
the server's drain); :class:`NotFoundHandler` answers the paths no route matches.  The bases of
the API routes themselves are in :mod:`tsf.server.api_handler`.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import tornado.web

from ..errors import InternalError, MethodNotAllowed, ResourceNotFound, ServiceUnavailable, TsfError
from ..serving.lifecycle import Lifecycle, Phase
from ..telemetry.redaction import redact_target

log = logging.getLogger("tsf.http")


def to_tsf_error(exc: BaseException | None, status: int) -> TsfError:
    if isinstance(exc, TsfError):
        return exc
    if isinstance(exc, tornado.web.HTTPError):
        if exc.status_code == 404:
            return ResourceNotFound("Requested resource is not found, please refer to API "
                                    "document.")
        if exc.status_code == 405:
            return MethodNotAllowed("Requested method is not allowed, please refer to API "
                                    "document.")
        try:
            reason = HTTPStatus(exc.status_code).phrase
        except ValueError:
            reason = "Error"
        return TsfError(exc.log_message or reason, status=exc.status_code,
                        type=reason.replace(" ", "") + "Exception")
    if status == 500 or exc is not None:
        return InternalError("internal server error; see the server log")
    return TsfError(HTTPStatus(status).phrase, status=status)


class JsonHandler(tornado.web.RequestHandler):
    """A request handler that answers JSON: JSON helpers, JSON error bodies, and the server's
    lifecycle.

    Every request is counted open until it finishes or its client leaves, so a drain can wait
    for them; once the server drains, each answer closes its connection (``Connection: close``).
    """

    request_id = ""  # set by handlers that queue work; logged and echoed on errors too
    trace_id = ""

    def __init__(self, application: tornado.web.Application, request: Any, **kwargs: Any) -> None:
        super().__init__(application, request, **kwargs)
        self.lifecycle: Lifecycle | None = self.settings.get("lifecycle")
        self._counted = self.lifecycle is not None
        if self.lifecycle is not None:
            self.lifecycle.request_opened()

    def set_default_headers(self) -> None:
        """CORS headers (see :mod:`tsf.server.cors`), when configured: on every answer, errors
        included (Tornado calls this again when it clears the headers for an error)."""
        cors = self.settings.get("cors")
        if cors is not None:
            for name, value in cors.answer_headers(self.request.headers.get("Origin")):
                self.set_header(name, value)

    @property
    def draining(self) -> bool:
        """True once a drain has begun: readiness probes fail from then on."""
        return self.lifecycle is not None and not self.lifecycle.serving

    def refuse_when_stopping(self) -> None:
        """Past the drain, nothing is served any more: 503 (never a 404 for a removed model)."""
        if self.lifecycle is not None and self.lifecycle.phase is Phase.STOPPING:
            raise ServiceUnavailable("the server is shutting down; retry on another replica")

    def finish(self, chunk: Any = None) -> Any:
        if self.draining and not self._headers_written:
            connection = self.request.connection
            if hasattr(connection, "_disconnect_on_finish"):  # Tornado's HTTP/1 connection
                connection._disconnect_on_finish = True  # adds Connection: close, then closes
        return super().finish(chunk)

    def _request_done(self) -> None:
        if self._counted:
            self._counted = False
            self.lifecycle.request_closed()  # type: ignore[union-attr]

    def on_finish(self) -> None:
        self._request_done()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._request_done()

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload, indent=2))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        error = to_tsf_error(exc, status_code)
        self.clear_header("Content-Encoding")
        self.set_status(error.status)
        self.set_header("Content-Type", "application/json")
        for key, value in getattr(error, "headers", {}).items():
            self.set_header(key, value)
        for header, attribute in (("X-Request-Id", "request_id"), ("X-Trace-Id", "trace_id")):
            if getattr(self, attribute, ""):  # send_error cleared them
                self.set_header(header, getattr(self, attribute))
        self.finish(json.dumps(self.error_document(error)))

    def error_document(self, error: TsfError) -> dict:
        """The JSON body of an error; protocols that name the message differently add to it."""
        return error.to_dict()

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, (TsfError, tornado.web.HTTPError)):
            return
        log.error("uncaught error on %s %s", self.request.method,
                  redact_target(self.request.uri),
                  exc_info=(typ, value, tb))


@tornado.web.stream_request_body
class NotFoundHandler(JsonHandler):
    """Answers every path no route matches, before reading any of the body (then closed)."""

    def prepare(self) -> None:
        self.refuse_when_stopping()
        raise ResourceNotFound("Requested resource is not found, please refer to API document.")

    def data_received(self, chunk: bytes) -> None:
        """Body bytes that arrive after the 404 are dropped."""

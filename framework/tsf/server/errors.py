"""The one place where exceptions become HTTP error responses ``{"code", "type", "message"}``."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import tornado.web

from ..errors import (InternalError, MethodNotAllowed, ResourceNotFound, TsfError)

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


class BaseHandler(tornado.web.RequestHandler):
    """Base request handler: JSON helpers and JSON error bodies."""

    request_id = ""  # set by handlers that queue work; logged and echoed on errors too
    trace_id = ""

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
        log.error("uncaught error on %s %s", self.request.method, self.request.uri,
                  exc_info=(typ, value, tb))


@tornado.web.stream_request_body
class NotFoundHandler(BaseHandler):
    """Answers every path no route matches, before reading any of the body (then closed)."""

    def prepare(self) -> None:
        raise ResourceNotFound("Requested resource is not found, please refer to API document.")

    def data_received(self, chunk: bytes) -> None:
        """Body bytes that arrive after the 404 are dropped."""

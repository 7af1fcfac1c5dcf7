"""The bases of the API routes: :class:`ApiHandler` under every route, :class:`BodyHandler`
under those that take a request body.

Every route streams its body (``stream_request_body``) so that a request can be refused before
any byte of it is read, where Tornado would otherwise buffer the whole body first.  Routes that
take no body drop its bytes under the same limits.
"""

from __future__ import annotations

import tornado.web

from ..services import Services
from .cors import is_preflight
from .json_handler import JsonHandler
from .request_body import BoundedBody

_UNIMPLEMENTED = tornado.web.RequestHandler._unimplemented_method


@tornado.web.stream_request_body
class ApiHandler(BoundedBody, JsonHandler):
    """A route of the inference, management or metrics API.

    Tornado passes it ``services`` and ``api`` (the name of the API it belongs to, whose token
    guards it).  Before any of the body is read, a request is refused 503 past the drain, 401
    without the API's token (unless the route is ``public``), 405 for a method the route lacks
    and 413 for a declared body over ``max_request_size``.  With CORS configured, a browser's
    preflight is answered 204 here (see :mod:`tsf.server.cors`).
    """

    public = False  # health probes set this: never behind the token

    def initialize(self, services: Services, api: str) -> None:
        self.services = services
        self.api = api
        self.limit_body(services.config)

    def prepare(self) -> None:
        self.refuse_when_stopping()
        if self.settings.get("cors") is not None and is_preflight(self.request):
            self.set_status(204)
            self.finish()
            return
        dataplane = self.services.dataplane
        if dataplane.tokens_enabled and not self.public:
            dataplane.check_token(self.api, self.request.headers.get("Authorization"))
        if getattr(type(self), self.request.method.lower(), None) is _UNIMPLEMENTED:
            raise tornado.web.HTTPError(405)
        self.expect_body()


class BodyHandler(ApiHandler):
    """A route that takes a request body: :meth:`body` is what arrived, whole."""

    keeps_body = True

    def body(self) -> bytes:
        if self._too_large:
            raise self.too_large(self._size)
        if len(self._chunks) == 1:
            return self._chunks[0]
        return b"".join(self._chunks)

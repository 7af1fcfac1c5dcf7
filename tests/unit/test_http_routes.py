"""Every HTTP route stands on ApiHandler and streams its body, so a request can be refused (token,
method, size) before any of the body is read; routes with no POST or PUT never keep a
body."""

from __future__ import annotations

import pytest
import tornado.web

from tsf.app import TsfServer
from tsf.config.settings import ServerConfig
from tsf.server.api_handler import ApiHandler, BodyHandler

UNIMPLEMENTED = tornado.web.RequestHandler._unimplemented_method


@pytest.mark.parametrize("settings", [{}, {"sagemaker": True},
                                      {"sagemaker": True, "sagemaker_multi_model": True}])
def test_every_route_is_an_api_handler_that_streams_its_body(tmp_path, settings):
    server = TsfServer(ServerConfig(workspace=str(tmp_path), **settings))
    for api, routes in server._routes().items():
        for pattern, handler, options in routes:
            assert issubclass(handler, ApiHandler), pattern
            assert handler._stream_request_body, pattern
            assert options == {"services": server.services, "api": api}, pattern
            if handler.post is UNIMPLEMENTED and handler.put is UNIMPLEMENTED:
                assert not issubclass(handler, BodyHandler), pattern

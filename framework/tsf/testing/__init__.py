"""Testing helpers and a pytest plugin: start a real ``tsf serve`` on ephemeral loopback ports,
or run a handler's batches in process with :class:`HandlerHarness`.

Enabled automatically through the ``pytest11`` entry point once tsf-framework is installed::

    def test_my_handler(tsf_server, tmp_path):
        server = tsf_server(model_store=tmp_path, models=["mine=mine.mar"])
        assert server.post("/predictions/mine", json=[1, 2]).status_code == 200

Every server started through the fixture is stopped (by PID, SIGTERM then SIGKILL) at the end of
the test, together with its worker processes.
"""

from __future__ import annotations

from typing import Any, Iterator

from .harness import HandlerHarness, HarnessAnswer, harness_request, oip_request
from .server import (LOOPBACK, ServerProcess, assert_error, exchange_raw, fixed_port,
                     free_port, random_image, stop_process, wait_for)

__all__ = ["LOOPBACK", "HandlerHarness", "HarnessAnswer", "ServerProcess", "assert_error",
           "exchange_raw", "fixed_port", "free_port", "harness_request", "oip_request",
           "random_image", "stop_process", "tsf_server", "wait_for"]

try:
    import pytest
except ImportError:  # pragma: no cover - tsf.testing is usable without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def tsf_server() -> Iterator[Any]:
        """Factory fixture: ``tsf_server(model_store=..., models=[...], config={...})``."""
        started: list[ServerProcess] = []

        def start(**kwargs: Any) -> ServerProcess:
            server = ServerProcess(**kwargs)
            started.append(server)
            return server

        yield start
        for server in started:
            server.stop()

"""A real ``tsf serve`` shared by the API tests, with the models they need loaded at start."""

from __future__ import annotations

import time

import pytest

from tsf.testing import ServerProcess

STARTUP_MODELS = ["mlp=mlp.mar", "eager=eager.mar", "exported=exported.mar", "echo=echo.mar",
                  "tsclass=tsclass.mar", "fn=fn.tar.gz", "picky=picky.mar"]


def wait_healthy(server: ServerProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.get("/ping").status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"server did not become healthy:\n{server.log()}")


@pytest.fixture(scope="session")
def served(model_store):
    server = ServerProcess(model_store=model_store, models=STARTUP_MODELS,
                           config={"max_request_size": 100000})
    try:
        wait_healthy(server)
        yield server
    finally:
        server.stop()


GRPC_CONFIG = {"enable_grpc": "true", "grpc_inference_address": "127.0.0.1:0",
               "grpc_management_address": "127.0.0.1:0", "max_request_size": 200000,
               "max_response_size": 200000}


@pytest.fixture(scope="session")
def protocol_server(model_store):
    """A server with gRPC on, for the OIP (HTTP and gRPC) and TorchServe gRPC tests."""
    server = ServerProcess(model_store=model_store, config=GRPC_CONFIG,
                           models=["mlp=mlp.mar", "mlpsig=mlpsig.mar",
                                   "tensorecho=tensorecho.mar", "picky=picky.mar",
                                   "teapot=teapot.mar"])
    try:
        wait_healthy(server)
        yield server
    finally:
        server.stop()

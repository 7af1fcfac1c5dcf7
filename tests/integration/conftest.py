"""A real ``tsf serve`` shared by the API tests, with the models they need loaded at start."""

from __future__ import annotations

import time

import pytest

from tsf.testing import ServerProcess, fixed_port

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
               "max_request_size": 200000, "max_response_size": 200000}


def grpc_config() -> dict:
    """gRPC on: inference on a free port (tsf's host:port form), management in TorchServe's
    documented form, a bare host and ``grpc_management_port``."""
    return {**GRPC_CONFIG, "grpc_management_address": "127.0.0.1",
            "grpc_management_port": fixed_port()}


@pytest.fixture(scope="session")
def protocol_server(model_store):
    """A server with gRPC on, for the OIP (HTTP and gRPC) and TorchServe gRPC tests."""
    server = ServerProcess(model_store=model_store, config=grpc_config(),
                           models=["mlp=mlp.mar", "mlpsig=mlpsig.mar",
                                   "tensorecho=tensorecho.mar", "picky=picky.mar",
                                   "teapot=teapot.mar"])
    try:
        wait_healthy(server)
        yield server
    finally:
        server.stop()


STREAMING_HANDLER = '''
import json
import time


class StreamingHandler:
    """TorchServe-style: three intermediate answers per request, DELAY s apart, then the final."""

    DELAY = 0.6

    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        words = []
        for row in data:
            body = row.get("data") or row.get("body")
            words.append(body.decode() if isinstance(body, (bytes, bytearray)) else str(body))
        for step in range(3):
            context.send_intermediate_predict_response(
                [f"{word} {step}|" for word in words], context.request_ids,
                "Intermediate Prediction success", 200)
            time.sleep(self.DELAY)
        if "fail" in words:
            raise ValueError("failed after streaming on purpose")
        return [json.dumps({"word": word, "batch": len(words), "done": time.time()})
                for word in words]
'''


@pytest.fixture(scope="session")
def streaming_archive(model_store, tmp_path_factory) -> str:
    """``streamer.mar`` in the model store, built with torch-model-archiver (batch size 2)."""
    import subprocess
    import sys
    from pathlib import Path

    src = tmp_path_factory.mktemp("streamer")
    (src / "streaming_handler.py").write_text(STREAMING_HANDLER)
    (src / "model-config.yaml").write_text("batchSize: 2\nmaxBatchDelay: 1500\n"
                                           "responseTimeout: 60\n")
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run([str(archiver), "--model-name", "streamer", "--version", "1.0",
                    "--handler", str(src / "streaming_handler.py"),
                    "--config-file", str(src / "model-config.yaml"),
                    "--export-path", str(model_store), "-f"], check=True)
    return "streamer.mar"

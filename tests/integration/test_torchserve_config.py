"""TorchServe's config.properties as users write it: the multi-line ``models`` key applied at
start and at register time."""

from __future__ import annotations

import time

import pytest

from tsf.testing import ServerProcess

pytestmark = pytest.mark.slow

# TorchServe's docs write the key over several lines, continued with backslashes
MODELS_KEY = r"""models={\
  "echo": {\
    "1.0": {"batchSize": 2, "maxWorkers": 3, "startupTimeout": 77}\
  },\
  "mlp": {\
    "1.0": {"batchSize": 4, "maxBatchDelay": 20, "minWorkers": 1, "marName": "mlp.mar"},\
    "2.0": {"defaultVersion": true, "batchSize": 6, "responseTimeout": 45, "minWorkers": 0}\
  }\
}
"""


def test_models_key_applies_at_start_and_at_register(model_store, tmp_path):
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:0\n"
                      "management_address=http://127.0.0.1:0\n"
                      "metrics_address=http://127.0.0.1:0\n" + MODELS_KEY)
    server = ServerProcess(args=["--ts-config", str(config)], model_store=model_store,
                           models=["echo=echo.mar"])
    try:
        deadline = time.monotonic() + 120
        while server.get("/ping").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        echo = server.manage("GET", "/models/echo").json()[0]
        # model-config.yaml (batchSize 8, minWorkers 1) beats the key; the rest is the key's
        assert (echo["batchSize"], echo["minWorkers"], echo["maxWorkers"],
                echo["startupTimeout"]) == (8, 1, 3, 77)
        assert server.register("mlp.mar", model_name="mlp").status_code == 200
        assert server.register("mlp2.mar", model_name="mlp").status_code == 200
        described = {d["modelVersion"]: d for d in
                     server.manage("GET", "/models/mlp/all").json()}
        assert (described["1.0"]["batchSize"], described["1.0"]["maxBatchDelay"],
                described["1.0"]["minWorkers"]) == (4, 20, 1)
        # minWorkers 0 counts as not set (TorchServe): the server's default of 1 applies
        assert (described["2.0"]["batchSize"], described["2.0"]["responseTimeout"],
                described["2.0"]["minWorkers"]) == (6, 45, 1)
        assert server.manage("GET", "/models/mlp").json()[0]["modelVersion"] == "2.0"
    finally:
        server.stop()

"""Management API against a real server: the TorchServe lifecycle and its error paths."""

from __future__ import annotations

import time

import pytest

from tsf.testing import ServerProcess, assert_error


@pytest.fixture(scope="module")
def mgmt(model_store):
    server = ServerProcess(model_store=model_store)
    yield server
    server.stop()


def test_register_predict_scale_describe_unregister(mgmt):
    # register (synchronous by default, like TorchServe)
    r = mgmt.manage("POST", "/models", params={"url": "mlp.mar", "initial_workers": 1})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": 'Model "mlp" Version: 1.0 registered with 1 initial workers'}
    assert mgmt.post("/predictions/mlp", json=[1, 2, 3, 4]).status_code == 200

    # scale synchronously to 2 workers
    r = mgmt.manage("PUT", "/models/mlp", params={"min_worker": 2, "synchronous": "true"})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Workers scaled to 2 for model: mlp"}

    described = mgmt.manage("GET", "/models/mlp").json()
    assert isinstance(described, list) and len(described) == 1
    model = described[0]
    assert model["modelName"] == "mlp" and model["modelVersion"] == "1.0"
    assert model["modelUrl"] == "mlp.mar" and model["minWorkers"] == 2
    assert model["batchSize"] == 1 and model["maxBatchDelay"] == 100
    assert len(model["workers"]) == 2
    assert {w["status"] for w in model["workers"]} <= {"READY", "BUSY"}
    assert all(w["pid"] > 0 and w["memoryUsage"] > 0 for w in model["workers"])
    assert mgmt.get("/ping").json() == {"status": "Healthy"}

    # asynchronous scale down answers 202 at once
    r = mgmt.manage("PUT", "/models/mlp", params={"min_worker": 1})
    assert r.status_code == 202 and r.json() == {"status": "Processing worker updates..."}
    deadline = time.monotonic() + 20
    while len(mgmt.manage("GET", "/models/mlp").json()[0]["workers"]) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    r = mgmt.manage("DELETE", "/models/mlp")
    assert r.status_code == 200 and r.json() == {"status": 'Model "mlp" unregistered'}
    assert_error(mgmt.post("/predictions/mlp", json=[1, 2, 3, 4]), 404, "ModelNotFoundException")
    assert_error(mgmt.manage("GET", "/models/mlp"), 404, "ModelNotFoundException")


def test_versions_default_and_set_default(mgmt):
    assert mgmt.register("mlp.mar", model_name="multi").status_code == 200
    assert mgmt.register("mlp2.mar", model_name="multi").status_code == 200
    # the first registered version stays the default
    assert mgmt.manage("GET", "/models/multi").json()[0]["modelVersion"] == "1.0"
    all_versions = mgmt.manage("GET", "/models/multi/all").json()
    assert sorted(m["modelVersion"] for m in all_versions) == ["1.0", "2.0"]
    assert mgmt.manage("GET", "/models/multi/2.0").json()[0]["modelVersion"] == "2.0"

    assert_error(mgmt.manage("DELETE", "/models/multi/1.0"), 403, "ForbiddenException")
    r = mgmt.manage("PUT", "/models/multi/2.0/set-default")
    assert r.status_code == 200 and "2.0" in r.json()["status"]
    assert mgmt.manage("GET", "/models/multi").json()[0]["modelVersion"] == "2.0"
    assert_error(mgmt.manage("PUT", "/models/multi/7.0/set-default"), 404)
    assert mgmt.post("/predictions/multi/1.0", json=[1, 2, 3, 4]).status_code == 200
    assert mgmt.manage("DELETE", "/models/multi/1.0").status_code == 200
    assert mgmt.manage("DELETE", "/models/multi").status_code == 200


def test_duplicate_registration_is_409(mgmt):
    assert mgmt.register("fn.tar.gz", model_name="dup").status_code == 200
    assert_error(mgmt.register("fn.tar.gz", model_name="dup"), 409, "ConflictStatusException")
    assert mgmt.manage("DELETE", "/models/dup").status_code == 200


def test_list_models_pages(mgmt):
    for name in ("page_a", "page_b", "page_c"):
        assert mgmt.register("fndir", model_name=name, initial_workers=0).status_code == 200
    first = mgmt.manage("GET", "/models", params={"limit": 2}).json()
    assert [m["modelName"] for m in first["models"]] == ["page_a", "page_b"]
    assert first["nextPageToken"] == "2"
    second = mgmt.manage("GET", "/models", params={"limit": 2, "next_page_token": 2}).json()
    assert [m["modelName"] for m in second["models"]] == ["page_c"]
    assert "nextPageToken" not in second
    # zero workers: a clear 503, not a hang
    assert_error(mgmt.post("/predictions/page_a", data=b"x"), 503,
                 "ServiceUnavailableException", "min_worker")
    for name in ("page_a", "page_b", "page_c"):
        assert mgmt.manage("DELETE", f"/models/{name}").status_code == 200


def test_register_errors(mgmt):
    assert_error(mgmt.manage("POST", "/models"), 400, "BadRequestException", "url")
    assert_error(mgmt.register("missing.mar"), 404, "ModelNotFoundException")
    assert_error(mgmt.register("../etc/passwd"), 400, "BadRequestException")
    assert_error(mgmt.register("https://example.com/model.mar"), 403, "ForbiddenException")
    assert_error(mgmt.register("mlp.mar", batch_size="many"), 400, "BadRequestException")
    assert_error(mgmt.manage("PUT", "/models/none", params={"min_worker": 1}), 404)
    assert mgmt.get("/ping").status_code == 200


def test_load_failure_is_reported_by_register(mgmt):
    body = assert_error(mgmt.register("broken.mar"), 500, "ModelLoadException",
                        "weights are missing on purpose")
    assert "broken" in body["message"]
    assert_error(mgmt.manage("GET", "/models/broken"), 404)


def test_missing_handler_plugin_is_named(model_store):
    # as if tsf-handler-detector were not installed
    server = ServerProcess(model_store=model_store, env={"TSF_DISABLE_PLUGINS": "object_detector"})
    try:
        assert_error(server.register("nohandler.mar"), 500, "ModelLoadException",
                     "pip install tsf-handler-detector")
        assert server.get("/ping").status_code == 200
    finally:
        server.stop()


def test_handler_breaking_the_batch_contract(mgmt):
    assert mgmt.register("badlen.mar").status_code == 200
    assert_error(mgmt.post("/predictions/badlen", json=[1]), 500, "HandlerException",
                 "one result per request")
    assert mgmt.manage("DELETE", "/models/badlen").status_code == 200


def test_model_config_yaml_applies_and_rest_wins(mgmt):
    assert mgmt.register("echo.mar").status_code == 200
    model = mgmt.manage("GET", "/models/echo").json()[0]
    assert (model["batchSize"], model["maxBatchDelay"], model["responseTimeout"]) == (8, 300, 30)
    assert mgmt.manage("DELETE", "/models/echo").status_code == 200
    assert mgmt.register("echo.mar", batch_size=2, max_batch_delay=5).status_code == 200
    model = mgmt.manage("GET", "/models/echo").json()[0]
    assert (model["batchSize"], model["maxBatchDelay"]) == (2, 5)
    assert mgmt.manage("DELETE", "/models/echo").status_code == 200


def test_register_with_json_body(mgmt):
    r = mgmt.manage("POST", "/models", json={"url": "fn.tar.gz", "model_name": "viajson",
                                             "initial_workers": 1})
    assert r.status_code == 200, r.text
    assert mgmt.post("/predictions/viajson", data=b"json",
                     headers={"Content-Type": "text/plain"}).text == "hello json"
    assert mgmt.manage("DELETE", "/models/viajson").status_code == 200


def test_plugins_endpoint_lists_builtin_storage(mgmt):
    plugins = mgmt.manage("GET", "/plugins").json()["plugins"]
    storage = next(p for p in plugins if p["name"] == "tsf.storage")
    assert "tsf_fetch_archive" in storage["hooks"]

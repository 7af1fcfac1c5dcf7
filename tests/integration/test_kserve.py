"""KServe's TorchServe layout served unchanged, called with KServe's and Triton's own clients.

The layout is what KServe's storage initializer leaves in ``/mnt/models`` for a TorchServe
``storageUri``: ``config/config.properties`` (one address for inference and management, the
``model_snapshot`` listing models, versions, workers and batch settings) and
``model-store/*.mar``.  tsf is started with the arguments KServe's TorchServe runtime passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tsf.testing import ServerProcess, assert_error, free_port

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")

REPO = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = Path(os.environ.get("TSF_KSERVE_PYTHON", REPO / ".venv-kserve/bin/python"))
CLIENT_SCRIPT = Path(__file__).with_name("kserve_client_calls.py")

SNAPSHOT = {
    "name": "startup.cfg", "modelCount": 1,
    "models": {"tsclass": {"1.0": {"defaultVersion": True, "marName": "tsclass.mar",
                                   "minWorkers": 1, "batchSize": 2, "maxBatchDelay": 20}},
               "kmlp": {
        "1.0": {"defaultVersion": False, "marName": "mlp.mar", "minWorkers": 0,
                "maxWorkers": 1, "batchSize": 1, "maxBatchDelay": 100, "responseTimeout": 120},
        "2.0": {"defaultVersion": True, "marName": "mlp2.mar", "minWorkers": 1,
                "maxWorkers": 2, "batchSize": 4, "maxBatchDelay": 50, "responseTimeout": 90},
    }},
}


def write_layout(root: Path, model_store: Path, http_port: int) -> Path:
    """``root`` laid out as KServe's storage initializer unpacks a TorchServe storageUri."""
    store = root / "model-store"
    store.mkdir(parents=True)
    for mar in ("mlp.mar", "mlp2.mar", "tsclass.mar"):
        shutil.copy(model_store / mar, store / mar)
    (root / "config").mkdir()
    properties = root / "config" / "config.properties"
    properties.write_text("\n".join([
        f"inference_address=http://127.0.0.1:{http_port}",
        f"management_address=http://127.0.0.1:{http_port}",
        "metrics_address=http://127.0.0.1:0",
        "grpc_inference_address=127.0.0.1:0",
        "grpc_management_address=127.0.0.1:0",
        "enable_metrics_api=true",
        "metrics_format=prometheus",
        "number_of_netty_threads=4",
        "job_queue_size=10",
        "enable_envvars_config=true",
        "install_py_dep_per_model=true",
        f"model_store={store}",
        "model_snapshot=" + json.dumps(SNAPSHOT),
    ]) + "\n")
    return properties


def wait_model_ready(base: str, model: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(f"{base}/v2/models/{model}/ready", timeout=10).status_code == 200:
            return
        time.sleep(0.3)
    raise AssertionError(f"{model} was not ready within {timeout} s")


@pytest.fixture(scope="module")
def kserve_server(model_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("mnt-models")
    http_port = free_port()
    properties = write_layout(root, model_store, http_port)
    # KServe's TorchServe runtime: torchserve --start --model-store=... --ts-config=..., plus
    # the flags its samples append; TS_SERVICE_ENVELOPE comes from the runtime's env
    args = ["--start", f"--model-store={root / 'model-store'}", f"--ts-config={properties}",
            "--disable-token-auth", "--enable-model-api"]
    server = ServerProcess(args=args, env={"TS_SERVICE_ENVELOPE": "kservev2",
                                           "TS_ENABLE_GRPC": "true"})
    try:
        wait_model_ready(server.inference, "kmlp")
        yield server
    finally:
        server.stop()


def rest_scores(server: ServerProcess, rows: list) -> list:
    return [server.post("/predictions/kmlp", json=row).json() for row in rows]


@pytest.mark.slow
def test_one_address_serves_inference_and_management(kserve_server):
    assert kserve_server.inference == kserve_server.management
    assert kserve_server.get("/ping").json() == {"status": "Healthy"}
    listed = kserve_server.manage("GET", "/models").json()["models"]
    assert [m["modelName"] for m in listed] == ["kmlp", "tsclass"]
    assert kserve_server.get("/v2/health/ready").status_code == 200


@pytest.mark.slow
def test_snapshot_registers_versions_workers_and_batch_settings(kserve_server):
    described = {d["modelVersion"]: d for d in
                 kserve_server.manage("GET", "/models/kmlp/all").json()}
    assert set(described) == {"1.0", "2.0"}
    assert (described["2.0"]["batchSize"], described["2.0"]["maxBatchDelay"],
            described["2.0"]["responseTimeout"], described["2.0"]["minWorkers"],
            described["2.0"]["maxWorkers"]) == (4, 50, 90, 1, 2)
    assert (described["1.0"]["minWorkers"], described["1.0"]["maxWorkers"],
            described["1.0"]["batchSize"]) == (0, 1, 1)
    assert all(d["loadedAtStartup"] for d in described.values())
    meta = kserve_server.get("/v2/models/kmlp").json()
    assert sorted(meta["versions"]) == ["1.0", "2.0"]
    # defaultVersion: the unversioned routes reach 2.0
    assert kserve_server.manage("GET", "/models/kmlp").json()[0]["modelVersion"] == "2.0"


@pytest.mark.slow
def test_kserve_python_client_v1_and_v2(kserve_server):
    if not KSERVE_PYTHON.exists():
        pytest.skip(f"{KSERVE_PYTHON} is missing: `make kserve-client` (or `make test`) builds it")
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
    run = subprocess.run([str(KSERVE_PYTHON), str(CLIENT_SCRIPT), kserve_server.inference,
                          "kmlp", json.dumps(rows)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["v1_live"] and seen["v1_model_ready"]
    assert seen["v2_live"] and seen["v2_ready"] and seen["v2_model_ready"]
    expected = rest_scores(kserve_server, rows)
    np.testing.assert_allclose(seen["v1_predict"]["predictions"], expected, rtol=1e-4, atol=1e-6)
    v2 = seen["v2_infer"]
    assert v2["model_name"] == "kmlp" and v2["id"] == "kserve-1"
    assert v2["outputs"][0]["shape"] == [2, 3]
    np.testing.assert_allclose(v2["outputs"][0]["data"], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(seen["v2_infer_binary"][0], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_tritonclient_grpc_v2(kserve_server):
    client = tritonclient_grpc.InferenceServerClient(kserve_server.urls["grpc_inference"])
    assert client.is_server_ready() and client.is_model_ready("kmlp")
    rows = np.array([[0.5, 0.25, -0.5, 1.0]], dtype=np.float32)
    tensor = tritonclient_grpc.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("kmlp", [tensor])
    assert result.get_response().model_version == "2.0"
    np.testing.assert_allclose(result.as_numpy("output0"), rest_scores(kserve_server,
                                                                       rows.tolist()),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_torchserve_handler_gets_kserve_v1_instances_as_torchserve_rows(kserve_server):
    """What TorchServe's kserve envelope hands a handler, one instance per row, is what a
    TorchServe-style handler gets from tsf's /v1 route."""
    wait_model_ready(kserve_server.inference, "tsclass")
    response = requests.post(f"{kserve_server.inference}/v1/models/tsclass:predict",
                             json={"instances": [[1, 2, 3], [10, 20]]}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [{"model": "tsclass", "sum": 6},
                                               {"model": "tsclass", "sum": 30}]}


@pytest.mark.slow
def test_kserve_v1_bad_input_is_a_json_400(kserve_server):
    response = requests.post(f"{kserve_server.inference}/v1/models/kmlp:predict",
                             data=b'{"instances": "not a list"}', timeout=30)
    assert_error(response, 400, text="instances")
    assert kserve_server.get("/ping").status_code == 200


def test_bad_snapshot_stops_the_start_with_its_reason(tmp_path):
    properties = tmp_path / "config.properties"
    properties.write_text('inference_address=http://127.0.0.1:0\nmanagement_address='
                          'http://127.0.0.1:0\nmetrics_address=http://127.0.0.1:0\n'
                          'model_snapshot={"models": {"m": {"1.0": {"minWorkers": 1}}}}\n')
    run = subprocess.run([sys.executable, "-m", "tsf.cli", "serve", "--start",
                          f"--ts-config={properties}", "--model-store", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "model_snapshot: model 'm' version '1.0' has no marName" in run.stderr
    # TorchServe's TS_CONFIG_FILE names the config when --ts-config is absent
    run = subprocess.run([sys.executable, "-m", "tsf.cli", "serve", "--start"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TS_CONFIG_FILE": str(properties)})
    assert run.returncode == 2 and "has no marName" in run.stderr


def test_torchserve_flags_lift_token_and_model_api_settings(tmp_path):
    """KServe's samples append --disable-token-auth --enable-model-api to a config that may ask
    for tokens or close the model API: the flags win, as in TorchServe."""
    (tmp_path / "key_file.json").write_text('{"management": {"key": "m-secret"}, '
                                           '"inference": {"key": "i-secret"}}')
    properties = tmp_path / "config.properties"
    port = free_port()
    properties.write_text(f"inference_address=http://127.0.0.1:{port}\n"
                          f"management_address=http://127.0.0.1:{port}\n"
                          "metrics_address=http://127.0.0.1:0\nenable_model_api=false\n"
                          f"auth_token_file={tmp_path / 'key_file.json'}\n")
    closed = ServerProcess(args=["--start", f"--ts-config={properties}"])
    try:
        assert closed.manage("POST", "/models").status_code == 401
    finally:
        closed.stop()
    server = ServerProcess(args=["--start", f"--ts-config={properties}", "--disable-token-auth",
                                 "--enable-model-api"])
    try:
        assert_error(server.manage("POST", "/models"), 400, text="url")  # reached, no token
        assert server.get("/ping").status_code == 200
    finally:
        server.stop()

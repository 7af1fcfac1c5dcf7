"""SageMaker's container contract: ``/opt/ml/model`` simulated in a temporary folder, the
``SAGEMAKER_*`` variables set, and the requests SageMaker sends (``/ping``, ``/invocations`` with
its content types, the multi-model load/list/unload/invoke routes)."""

from __future__ import annotations

import io
import json
import shutil
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tsf.testing import LOOPBACK, ServerProcess, assert_error

FULL_INFERENCE = '''
    import json
    import os

    import pluggy  # named in code/requirements.txt
    import torch


    def model_fn(model_dir):
        return {"net": torch.jit.load(os.path.join(model_dir, "model.pt")), "dir": model_dir}


    def input_fn(request_body, content_type):
        if content_type != "application/json":
            raise ValueError(f"this model reads JSON, not {content_type}")
        assert isinstance(request_body, str), type(request_body)  # JSON arrives as text
        return torch.tensor(json.loads(request_body)["rows"], dtype=torch.float32)


    def predict_fn(data, model):
        if data.shape[-1] != 4:
            raise ValueError("rows must have 4 features")
        return model["net"](data)


    def output_fn(prediction, accept, context):
        body = {"scores": prediction.tolist(), "accept": accept, "model": context.model_name}
        return json.dumps(body), "application/vnd.scores+json"
'''

# written for SageMaker's inference toolkit: its decoder, encoder, content types and errors
TOOLKIT_INFERENCE = '''
    import torch
    from sagemaker_inference import content_types, decoder, encoder, errors


    def input_fn(input_data, content_type):
        if content_type == "application/x-refused":
            raise errors.GenericInferenceToolkitError(422, "rows need a label column")
        return torch.tensor(decoder.decode(input_data, content_type), dtype=torch.float32)


    def predict_fn(data, model):
        if data.shape[-1] != 4:
            raise errors.GenericInferenceToolkitError(409, f"{data.shape[-1]} features, not 4")
        with torch.no_grad():
            return model(data)


    def output_fn(prediction, accept):
        if accept not in (content_types.JSON, content_types.CSV, content_types.NPY):
            raise errors.UnsupportedFormatError(accept)
        return encoder.encode(prediction.numpy(), accept), accept
'''

SUBSET_INFERENCE = '''
    def predict_fn(data, model, context):
        return model(data).sum(dim=-1, keepdim=True)
'''


def scripted_mlp(path: Path):
    import torch

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    scripted = torch.jit.script(net)
    scripted.save(str(path))
    return scripted


def model_folder(folder: Path, inference: str | None = None,
                 requirements: str | None = None) -> Path:
    """A model.tar.gz's contents as SageMaker unpacks them: model.pt and code/."""
    folder.mkdir(parents=True)
    scripted_mlp(folder / "model.pt")
    if inference is not None or requirements is not None:
        (folder / "code").mkdir()
    if inference is not None:
        (folder / "code" / "inference.py").write_text(textwrap.dedent(inference))
    if requirements is not None:
        (folder / "code" / "requirements.txt").write_text(requirements)
    return folder


def reference(folder: Path, rows) -> np.ndarray:
    import torch

    net = torch.jit.load(str(folder / "model.pt"))
    with torch.no_grad():
        return net(torch.tensor(rows, dtype=torch.float32)).numpy()


def wait_ping(server: ServerProcess, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.get("/ping").status_code == 200:
            return
        time.sleep(0.3)
    raise AssertionError(f"/ping never answered 200:\n{server.log()}")


def sagemaker_args() -> list[str]:
    # SAGEMAKER_BIND_TO_PORT would bind every interface; tests keep to loopback (the command
    # line wins over SageMaker's variables)
    return ["--sagemaker", "--inference-address", LOOPBACK, "--management-address", LOOPBACK,
            "--metrics-address", LOOPBACK]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt-ml")
    folder = model_folder(root / "model", FULL_INFERENCE, requirements="pluggy\n")
    # port 1 cannot be bound here: serving proves the command line's address won
    env = {"SAGEMAKER_MODEL_DIR": str(folder), "SAGEMAKER_BIND_TO_PORT": "1",
           "SAGEMAKER_TS_BATCH_SIZE": "3", "SAGEMAKER_TS_MAX_BATCH_DELAY": "40",
           "SAGEMAKER_TS_RESPONSE_TIMEOUT": "77", "SAGEMAKER_MAX_REQUEST_SIZE": "4000",
           "TSF_SAGEMAKER_INSTALL_REQUIREMENTS": "true"}
    # an image's own config (deploy/config.properties) names another store and load_models=all
    image_store = root / "image-store"
    image_store.mkdir()
    (image_store / "other.mar").write_bytes(b"not loaded in SageMaker mode")
    image_config = root / "config.properties"
    image_config.write_text(f"model_store={image_store}\nload_models=all\n")
    server = ServerProcess(args=sagemaker_args() + ["--ts-config", str(image_config)], env=env)
    try:
        wait_ping(server)
        yield server, folder
    finally:
        server.stop()


@pytest.mark.slow
def test_inference_py_serves_unchanged(single):
    server, folder = single
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, -2.0, 0.5, 0.0]]
    response = server.post("/invocations", data=json.dumps({"rows": rows}),
                           headers={"Content-Type": "application/json",
                                    "Accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/vnd.scores+json"
    body = response.json()
    assert body["accept"] == "application/json" and body["model"] == "model"
    np.testing.assert_allclose(body["scores"], reference(folder, rows), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_user_errors_are_json_and_the_model_keeps_serving(single):
    server, _ = single
    bad = server.post("/invocations", data=json.dumps({"rows": [[1, 2]]}),
                      headers={"Content-Type": "application/json"})
    assert_error(bad, 500, text="rows must have 4 features")
    csv = server.post("/invocations", data="1,2,3,4", headers={"Content-Type": "text/csv"})
    assert_error(csv, 500, text="this model reads JSON, not text/csv")
    too_big = server.post("/invocations", data=b"x" * 5000,
                          headers={"Content-Type": "application/json"})
    assert_error(too_big, 413, text="max_request_size")
    assert server.get("/ping").status_code == 200
    ok = server.post("/invocations", data=json.dumps({"rows": [[0, 0, 0, 0]]}),
                     headers={"Content-Type": "application/json"})
    assert ok.status_code == 200


@pytest.mark.slow
def test_sagemaker_variables_set_batching_timeouts_and_requirements(single):
    server, folder = single
    listed = server.manage("GET", "/models").json()["models"]
    assert [m["modelName"] for m in listed] == ["model"]
    described = server.manage("GET", "/models/model").json()[0]
    assert (described["batchSize"], described["maxBatchDelay"],
            described["responseTimeout"], described["handler"]) == (3, 40, 77, "sagemaker")
    assert described["modelUrl"] == folder.resolve().as_uri()
    log = server.log()
    assert f"installing {folder / 'code' / 'requirements.txt'}" in log
    assert f"installed {folder / 'code' / 'requirements.txt'}" in log


@pytest.mark.slow
def test_execution_parameters_answer_as_torchserves_plugin(single):
    server, _ = single
    response = server.get("/execution-parameters")
    assert response.status_code == 200
    # SAGEMAKER_MAX_REQUEST_SIZE=4000 is under one MiB: TorchServe's integer division gives 0
    assert response.json() == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD",
                               "MaxPayloadInMB": 0}
    assert response.text.startswith('{\n  "MaxConcurrentTransforms"')


# --- multi-model endpoints ------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi(tmp_path_factory, model_store):
    base = tmp_path_factory.mktemp("sagemaker-base")
    models = base / "models"
    model_folder(models / "defaults" / "model")
    model_folder(models / "subset" / "model", SUBSET_INFERENCE)
    model_folder(models / "toolkit" / "model", TOOLKIT_INFERENCE)
    (models / "archived" / "model").mkdir(parents=True)
    shutil.copy(model_store / "mlp.mar", models / "archived" / "model" / "mlp.mar")
    (models / "empty" / "model").mkdir(parents=True)
    model_folder(models / "badreqs" / "model", SUBSET_INFERENCE, requirements="not valid ==\n")
    outside = model_folder(base / "elsewhere" / "model")
    env = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_BASE_DIR": str(base),
           "TSF_SAGEMAKER_INSTALL_REQUIREMENTS": "true"}
    server = ServerProcess(args=sagemaker_args(), env=env)
    try:
        wait_ping(server)
        yield server, models, outside
    finally:
        server.stop()


def load(server: ServerProcess, name: str, url: Path | str):
    return server.post("/models", json={"model_name": name, "url": str(url)},
                       headers={"X-Amzn-SageMaker-Target-Model": f"{name}.tar.gz"})


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


@pytest.mark.slow
def test_multi_model_load_list_invoke_unload(multi):
    server, models, _ = multi
    folder = models / "defaults" / "model"
    assert load(server, "defaults", folder).status_code == 200
    assert_error(load(server, "defaults", folder), 409)
    listed = server.get("/models").json()
    assert listed == {"models": [{"modelName": "defaults", "modelUrl": folder.as_uri()}]}
    assert server.get("/models/defaults").json()["modelName"] == "defaults"

    rows = [[0.5, 0.1, -0.3, 2.0], [0.0, 1.0, 1.0, 1.0]]
    want = reference(folder, rows)
    as_json = server.post("/models/defaults/invoke", data=json.dumps(rows),
                          headers={"Content-Type": "application/json"})  # no Accept: JSON
    assert as_json.headers["Content-Type"] == "application/json"
    np.testing.assert_allclose(as_json.json(), want, rtol=1e-5, atol=1e-6)
    as_csv = server.post("/models/defaults/invoke", data="0.5,0.1,-0.3,2.0\n0,1,1,1\n",
                         headers={"Content-Type": "text/csv", "Accept": "text/html, text/csv"})
    assert as_csv.headers["Content-Type"] == "text/csv"
    np.testing.assert_allclose(np.loadtxt(io.StringIO(as_csv.text), delimiter=","), want,
                               rtol=1e-5, atol=1e-6)
    as_npy = server.post("/models/defaults/invoke", data=npy(np.array(rows, np.float32)),
                         headers={"Content-Type": "application/x-npy",
                                  "Accept": "application/x-npy"})
    assert as_npy.headers["Content-Type"] == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(as_npy.content)), want, rtol=1e-5, atol=1e-6)

    assert_error(server.post("/models/defaults/invoke", data=json.dumps(rows),
                             headers={"Content-Type": "application/json",
                                      "Accept": "image/png"}), 406, text="image/png")
    assert_error(server.post("/models/defaults/invoke", data="<rows/>",
                             headers={"Content-Type": "application/xml"}), 415,
                 text="application/xml")
    assert_error(server.post("/models/defaults/invoke", data="[[1, 2,",
                             headers={"Content-Type": "application/json"}), 400)
    assert_error(server.post("/models/defaults/invoke", data="a,b,c,d\n",
                             headers={"Content-Type": "text/csv"}), 400, text="not a numeric")
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_error(server.post("/models/defaults/invoke", data=pickled.getvalue(),
                             headers={"Content-Type": "application/x-npy"}), 400, text="pickle")
    assert_error(server.post("/models/defaults/invoke", data=npy(np.ones((2, 4)))[:40],
                             headers={"Content-Type": "application/x-npy"}), 400)

    # the same model through TorchServe's own route (JSON parsed by the route on the way)
    via_rest = server.post("/predictions/defaults", json=rows)
    np.testing.assert_allclose(via_rest.json(), want, rtol=1e-5, atol=1e-6)
    assert_error(server.post("/models/defaults/invoke", data=b"\xff\xfe",
                             headers={"Content-Type": "application/json"}), 400, text="UTF-8")

    assert server.request("DELETE", server.inference, "/models/defaults").status_code == 200
    assert_error(server.post("/models/defaults/invoke", data="[[1, 2, 3, 4]]",
                             headers={"Content-Type": "application/json"}), 404)
    assert_error(server.request("DELETE", server.inference, "/models/defaults"), 404)
    assert server.get("/models").json() == {"models": []}
    assert folder.joinpath("model.pt").is_file()  # SageMaker's files are left alone


@pytest.mark.slow
def test_multi_model_subset_functions_and_archives(multi):
    server, models, _ = multi
    assert load(server, "subset", models / "subset" / "model").status_code == 200
    rows = [[1.0, 2.0, 3.0, 4.0]]
    answer = server.post("/models/subset/invoke", data=json.dumps(rows),
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    want = reference(models / "subset" / "model", rows).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(answer.json(), want, rtol=1e-5, atol=1e-6)
    assert server.request("DELETE", server.inference, "/models/subset").status_code == 200

    assert load(server, "archived", models / "archived" / "model").status_code == 200
    scores = server.post("/models/archived/invoke", json=[0.1, 0.2, 0.3, 0.4])
    assert scores.status_code == 200 and len(scores.json()) == 3
    assert server.request("DELETE", server.inference, "/models/archived").status_code == 200


DEEP_JSON = "[" * 5000  # 5,000 unclosed brackets


@pytest.mark.slow
def test_deep_json_to_the_default_input_fn_is_a_400_and_the_model_keeps_serving(multi):
    server, models, _ = multi
    assert load(server, "deep", models / "defaults" / "model").status_code == 200
    try:
        assert_error(server.post("/models/deep/invoke", data=DEEP_JSON,
                                 headers={"Content-Type": "application/json"}), 400,
                     text="nested")
        assert_error(server.post("/models/deep/invoke", data="[[1, 2, 3, 4]]",
                                 headers={"Content-Type": "application/yaml"}), 415)
        ok = server.post("/models/deep/invoke", data="[[1, 2, 3, 4]]",
                         headers={"Content-Type": "application/json"})
        assert ok.status_code == 200 and len(ok.json()[0]) == 3
    finally:
        server.request("DELETE", server.inference, "/models/deep")


@pytest.mark.slow
def test_inference_py_written_for_the_sagemaker_toolkit_serves(multi):
    server, models, _ = multi
    folder = models / "toolkit" / "model"
    assert load(server, "toolkit", folder).status_code == 200, server.log()[-3000:]
    try:
        rows = [[0.5, 0.1, -0.3, 2.0], [0.0, 1.0, 1.0, 1.0]]
        as_csv = server.post("/models/toolkit/invoke", data=json.dumps(rows),
                             headers={"Content-Type": "application/json",
                                      "Accept": "text/csv"})
        assert as_csv.status_code == 200, as_csv.text
        assert as_csv.headers["Content-Type"] == "text/csv"
        np.testing.assert_allclose(np.loadtxt(io.StringIO(as_csv.text), delimiter=","),
                                   reference(folder, rows), rtol=1e-5, atol=1e-6)
        as_npy = server.post("/models/toolkit/invoke", data=npy(np.array(rows, np.float32)),
                             headers={"Content-Type": "application/x-npy",
                                      "Accept": "application/x-npy"})
        np.testing.assert_allclose(np.load(io.BytesIO(as_npy.content)),
                                   reference(folder, rows), rtol=1e-5, atol=1e-6)
        # GenericInferenceToolkitError(status, message) from any *_fn: that status and message
        assert_error(server.post("/models/toolkit/invoke", data="1,2",
                                 headers={"Content-Type": "application/x-refused"}), 422,
                     text="rows need a label column")
        assert_error(server.post("/models/toolkit/invoke", data="[[1, 2, 3]]",
                                 headers={"Content-Type": "application/json"}), 409,
                     text="3 features, not 4")
        # the toolkit's decoder: unsupported types are a 415, deep JSON a 400
        assert_error(server.post("/models/toolkit/invoke", data="x",
                                 headers={"Content-Type": "application/xml"}), 415,
                     text="application/xml")
        assert_error(server.post("/models/toolkit/invoke", data=DEEP_JSON,
                                 headers={"Content-Type": "application/json"}), 400,
                     text="nested")
        assert_error(server.post("/models/toolkit/invoke", data=json.dumps(rows),
                                 headers={"Content-Type": "application/json",
                                          "Accept": "image/png"}), 406, text="image/png")
        assert server.get("/ping").status_code == 200
    finally:
        server.request("DELETE", server.inference, "/models/toolkit")


@pytest.mark.slow
def test_multi_model_bad_loads_are_precise(multi):
    server, models, outside = multi
    assert_error(load(server, "outside", outside), 403, text="outside the model store")
    assert_error(load(server, "missing", models / "missing" / "model"), 404)
    assert_error(load(server, "empty", models / "empty" / "model"), 404, text="empty")
    assert_error(load(server, "badreqs", models / "badreqs" / "model"), 500,
                 text="requirements.txt failed (pip exit")
    assert_error(server.post("/models", data=b"{not json"), 400)
    assert_error(server.post("/models", json={"model_name": "x"}), 400, text="url")
    assert_error(server.post("/models/x"), 405)
    assert server.get("/ping").status_code == 200


BROKEN_INFERENCE = '''
    def model_fn(model_dir):
        raise RuntimeError("the weights are not in " + model_dir)
'''


@pytest.mark.slow
def test_a_model_that_fails_to_load_fails_ping_with_json(tmp_path):
    folder = model_folder(tmp_path / "model", BROKEN_INFERENCE)
    server = ServerProcess(args=sagemaker_args(), env={"SAGEMAKER_MODEL_DIR": str(folder)})
    try:
        deadline = time.monotonic() + 120
        while "failed to load" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "the weights are not in" in server.log()
        assert_error(server.get("/ping"), 503, text="is not loaded")
        assert_error(server.post("/invocations", data="[[1, 2, 3, 4]]",
                                 headers={"Content-Type": "application/json"}), 404)
    finally:
        server.stop()


def test_docker_run_image_serve_turns_sagemaker_mode_on(tmp_path):
    """SageMaker runs `docker run IMAGE serve`: after an entry point of `tsf serve ...` the
    trailing `serve` selects SageMaker mode (here with no model yet: /ping says so)."""
    missing = tmp_path / "model"
    server = ServerProcess(args=["--inference-address", LOOPBACK, "--management-address",
                                 LOOPBACK, "--metrics-address", LOOPBACK, "serve"],
                           env={"SAGEMAKER_MODEL_DIR": str(missing)})
    try:
        assert_error(server.get("/ping"), 503, text=f"the model in {missing} is not loaded")
        assert f"model folder {missing} does not exist" in server.log()
    finally:
        server.stop()

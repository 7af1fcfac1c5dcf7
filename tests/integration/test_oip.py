"""KServe v2 / Open Inference Protocol, checked with Triton's own clients over HTTP and gRPC."""

from __future__ import annotations

import concurrent.futures
import json

import numpy as np
import pytest
import requests

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException, np_to_triton_dtype  # noqa: E402

from tsf.testing import ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow

# One tensor of every OIP datatype (BYTES included), echoed back by the tensorecho model
ARRAYS = {
    "B": np.array([[True, False, True]]),
    "U8": np.array([[0, 255, 7]], dtype=np.uint8),
    "U16": np.array([[65535, 1, 2]], dtype=np.uint16),
    "U32": np.array([[2**32 - 1, 0, 3]], dtype=np.uint32),
    "U64": np.array([[2**63 + 5, 0, 1]], dtype=np.uint64),
    "I8": np.array([[-128, 127, 0]], dtype=np.int8),
    "I16": np.array([[-32768, 5, 6]], dtype=np.int16),
    "I32": np.array([[-(2**31), 7, 8]], dtype=np.int32),
    "I64": np.array([[-(2**62), 2**40, 9]], dtype=np.int64),
    "F16": np.array([[1.5, -2.25, 65504]], dtype=np.float16),
    "F32": np.array([[3.25, -1e-3, 1e30]], dtype=np.float32),
    "F64": np.array([[1e300, -2.5, 0.1]], dtype=np.float64),
    "S": np.array([[b"hi", "\u00e9t\u00e9".encode(), b""]], dtype=object),
}
RAW_BYTES = {"R": np.array([b"\x00\xff", b"\x80"], dtype=object)}  # not UTF-8: binary only


@pytest.fixture(scope="module")
def http_client(protocol_server):
    return tritonclient_http.InferenceServerClient(
        protocol_server.inference.removeprefix("http://"))


@pytest.fixture(scope="module")
def grpc_client(protocol_server):
    return tritonclient_grpc.InferenceServerClient(protocol_server.urls["grpc_inference"])


def _inputs(module, arrays: dict, binary: bool | None = None) -> list:
    out = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        if binary is None:
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_data_from_numpy(array, binary_data=binary)
        out.append(tensor)
    return out


def _rest_scores(server: ServerProcess, rows: np.ndarray) -> np.ndarray:
    return np.array([server.post("/predictions/mlp", json=row.tolist()).json() for row in rows])


def test_health_and_server_metadata(http_client, grpc_client):
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    meta = http_client.get_server_metadata()
    assert meta["name"] == "tsf" and "binary_tensor_data" in meta["extensions"]
    assert grpc_client.get_server_metadata().name == "tsf"


def test_model_metadata_from_model_config_and_from_handler(http_client, grpc_client):
    meta = http_client.get_model_metadata("mlpsig")
    assert meta["versions"] == ["1.0"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]
    grpc_meta = grpc_client.get_model_metadata("tensorecho", "1.0")
    assert [o.name for o in grpc_meta.outputs] == ["X", "BATCH"]
    assert list(grpc_meta.inputs[0].shape) == [-1, 4]
    assert http_client.is_model_ready("mlp") and grpc_client.is_model_ready("mlp", "1.0")


@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_matches_the_rest_api(protocol_server, http_client, binary):
    rows = np.random.default_rng(1).random((3, 4), dtype=np.float32)
    inputs = _inputs(tritonclient_http, {"x": rows}, binary)
    asked = [tritonclient_http.InferRequestedOutput("scores", binary_data=binary)]
    result = http_client.infer("mlpsig", inputs, outputs=asked, request_id="req-7")
    response = result.get_response()
    assert response["model_name"] == "mlpsig" and response["id"] == "req-7"
    assert response["outputs"][0]["shape"] == [3, 3]
    assert ("data" in response["outputs"][0]) is (not binary)
    np.testing.assert_allclose(result.as_numpy("scores"), _rest_scores(protocol_server, rows),
                               rtol=1e-4, atol=1e-6)


def test_grpc_infer_matches_the_rest_api(protocol_server, grpc_client):
    rows = np.random.default_rng(2).random((2, 4), dtype=np.float32)
    result = grpc_client.infer("mlp", _inputs(tritonclient_grpc, {"x": rows}))
    assert result.get_response().model_version == "1.0"
    np.testing.assert_allclose(result.as_numpy("output0"), _rest_scores(protocol_server, rows),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_every_datatype_round_trips_over_http(http_client, binary):
    arrays = {**ARRAYS, **RAW_BYTES} if binary else ARRAYS
    asked = [tritonclient_http.InferRequestedOutput(n, binary_data=binary) for n in arrays]
    result = http_client.infer("tensorecho", _inputs(tritonclient_http, arrays, binary),
                               outputs=asked)
    for name, array in arrays.items():
        got = result.as_numpy(name)
        if array.dtype == object:  # JSON carries BYTES as text, which the client keeps as str
            expected = array.tolist() if binary else \
                [[b.decode() for b in row] for row in array.tolist()]
            assert got.tolist() == expected, name
        else:
            assert got.dtype == array.dtype, name
            np.testing.assert_array_equal(got, array, err_msg=name)


def test_every_datatype_round_trips_over_grpc(grpc_client):
    arrays = {**ARRAYS, **RAW_BYTES}
    result = grpc_client.infer("tensorecho", _inputs(tritonclient_grpc, arrays))
    for name, array in arrays.items():
        got = result.as_numpy(name)
        if array.dtype == object:
            assert got.tolist() == array.tolist()
        else:
            assert got.dtype == array.dtype, name
            np.testing.assert_array_equal(got, array, err_msg=name)


def test_typed_grpc_contents_are_accepted(protocol_server):
    """Inputs in ``contents`` (not raw bytes), as some OIP clients send them."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="tensorecho")
    tensor = request.inputs.add(name="X", datatype="INT64", shape=[1, 3])
    tensor.contents.int64_contents.extend([4, -5, 6])
    words = request.inputs.add(name="W", datatype="BYTES", shape=[2])
    words.contents.bytes_contents.extend([b"a", b"bc"])
    client = tritonclient_grpc.InferenceServerClient(protocol_server.urls["grpc_inference"])
    response = client._client_stub.ModelInfer(request)
    names = [o.name for o in response.outputs]
    x = np.frombuffer(response.raw_output_contents[names.index("X")], dtype="<i8")
    assert x.tolist() == [4, -5, 6]
    assert response.raw_output_contents[names.index("W")] == b"\x01\x00\x00\x00a" \
        b"\x02\x00\x00\x00bc"


def test_oip_requests_are_batched_and_split_back(protocol_server):
    """Concurrent requests share batches (batchSize 8); each gets its own rows back."""
    client = tritonclient_http.InferenceServerClient(
        protocol_server.inference.removeprefix("http://"), concurrency=6)
    rng = np.random.default_rng(3)
    arrays = [rng.random((n, 4), dtype=np.float32) for n in (1, 2, 3, 1, 2, 1)]
    pending = [client.async_infer("tensorecho", _inputs(tritonclient_http, {"X": a}))
               for a in arrays]
    results = [p.get_result() for p in pending]
    for array, result in zip(arrays, results):
        np.testing.assert_array_equal(result.as_numpy("X"), array)
    assert max(int(r.as_numpy("BATCH")[0]) for r in results) > 1
    client.close()


def test_concatenated_batches_split_rows_per_request(protocol_server):
    """The base handler concatenates OIP tensors along the batch dimension and splits the
    model's output back by each request's rows."""
    url = protocol_server.management + "/models"
    r = requests.post(url, params={"url": "mlp.mar", "model_name": "mlpbatched",
                                   "batch_size": 8, "max_batch_delay": 300,
                                   "initial_workers": 1}, timeout=120)
    assert r.status_code == 200, r.text
    try:
        rng = np.random.default_rng(4)
        arrays = [rng.random((n, 4), dtype=np.float32) for n in (3, 1, 2)]
        infer_url = protocol_server.inference + "/v2/models/mlpbatched/infer"

        def send(array):
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(array.shape),
                                "data": array.flatten().tolist()}]}
            return requests.post(infer_url, json=body, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(send, arrays))
        for array, answer in zip(arrays, answers):
            assert answer.status_code == 200, answer.text
            output = answer.json()["outputs"][0]
            assert output["shape"] == [len(array), 3]
            np.testing.assert_allclose(np.array(output["data"]).reshape(-1, 3),
                                       _rest_scores(protocol_server, array),
                                       rtol=1e-4, atol=1e-6)
        sizes = requests.get(protocol_server.metrics + "/metrics", timeout=10).text
        assert 'tsf_batch_size_count{model_name="mlpbatched"' in sizes
    finally:
        requests.delete(url + "/mlpbatched", timeout=60)


@pytest.mark.parametrize("body, headers, fragment", [
    (b"{not json", {}, "not valid JSON"),
    (b"[1, 2]", {}, "JSON object"),
    (json.dumps({"inputs": []}).encode(), {}, "non-empty list"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]})
     .encode(), {}, "unknown datatype"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                             "data": [1, 2, 3]}]}).encode(), {}, "do not fill shape"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                             "parameters": {"binary_data_size": 16}}]}).encode() + b"\0" * 8,
     "header", "runs past"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                             "data": [1, 2, 3, 4]}],
                 "outputs": [{"name": "nope"}]}).encode(), {}, "'nope' was requested"),
])
def test_bad_requests_get_a_400_with_an_oip_error(protocol_server, body, headers, fragment):
    if headers == "header":
        headers = {"Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    r = protocol_server.post("/v2/models/mlp/infer", data=body, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()
    assert fragment in error["error"] and error["message"] == error["error"]
    assert error["code"] == 400
    assert protocol_server.post("/predictions/mlp", json=[0, 0, 0, 0]).status_code == 200


def test_errors_reach_triton_clients(http_client, grpc_client):
    with pytest.raises(InferenceServerException, match="not found"):
        http_client.get_model_metadata("missing")
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer("missing", _inputs(tritonclient_grpc, {"x": np.zeros((1, 4),
                                                                               np.float32)}))
    assert "NOT_FOUND" in str(caught.value.status())
    with pytest.raises(InferenceServerException, match="takes one input tensor"):
        http_client.infer("mlp", _inputs(tritonclient_http, {"a": np.zeros((1, 4), np.float32),
                                                             "b": np.zeros((1, 4), np.float32)}))
    assert not http_client.is_model_ready("missing")


def test_size_limits_apply_to_http_and_grpc(protocol_server, http_client, grpc_client):
    big = np.zeros((1, 100000), dtype=np.float32)  # 400 kB, over max_request_size (200 kB)
    with pytest.raises(InferenceServerException, match="413|max_request_size"):
        http_client.infer("tensorecho", _inputs(tritonclient_http, {"X": big}))
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer("tensorecho", _inputs(tritonclient_grpc, {"X": big}))
    assert "RESOURCE_EXHAUSTED" in str(caught.value.status())
    assert grpc_client.is_server_live()


def test_health_probes_need_no_token(model_store):
    server = ServerProcess(model_store=model_store, env={"TSF_INFERENCE_TOKEN": "s3cret"},
                           config={"enable_grpc": "true",
                                   "grpc_inference_address": "127.0.0.1:0",
                                   "grpc_management_address": "127.0.0.1:0"})
    try:
        assert server.get("/v2/health/live").status_code == 200
        assert server.get("/v2/health/ready").status_code == 200
        assert server.get("/v2").status_code == 401
        client = tritonclient_grpc.InferenceServerClient(server.urls["grpc_inference"])
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as caught:
            client.get_server_metadata()
        assert "UNAUTHENTICATED" in str(caught.value.status())
        metadata = client.get_server_metadata(headers={"authorization": "Bearer s3cret"})
        assert metadata.name == "tsf"
    finally:
        server.stop()


def test_kserve_v1_answers_are_held_to_max_response_size(protocol_server):
    """120 kB of UTF-8 in (under max_request_size), 360 kB of escaped JSON out (over
    max_response_size): a 500 naming the limit, and the server keeps serving."""
    body = json.dumps({"instances": ["\u00e9" * 60000]}, ensure_ascii=False).encode()
    r = protocol_server.post("/v1/models/tensorecho:predict", data=body,
                             headers={"Content-Type": "application/json"})
    assert r.status_code == 500, r.text[:200]
    assert "max_response_size" in r.json()["message"]
    small = protocol_server.post("/v1/models/tensorecho:predict", json={"instances": ["ok"]})
    assert small.status_code == 200 and small.json()["predictions"][0]["body"] == "ok"


def test_a_handlers_own_error_status_reaches_every_protocol(protocol_server):
    """A handler that answers 418 with a plain-text body (no exception) gets that status and
    text on REST, KServe v1 and v2, and the matching status code on gRPC."""
    rest = protocol_server.post("/predictions/teapot", json=[1])
    assert rest.status_code == 418 and rest.text == "short and stout"
    v1 = protocol_server.post("/v1/models/teapot:predict", json={"instances": [1]})
    assert v1.status_code == 418 and v1.json()["message"] == "short and stout"
    v2 = protocol_server.post("/v2/models/teapot/infer", json={
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
    assert v2.status_code == 418 and v2.json()["error"] == "short and stout"
    client = tritonclient_grpc.InferenceServerClient(protocol_server.urls["grpc_inference"])
    with pytest.raises(InferenceServerException) as caught:
        client.infer("teapot", _inputs(tritonclient_grpc, {"x": np.ones(1, np.float32)}))
    assert "INVALID_ARGUMENT" in str(caught.value.status())
    assert "short and stout" in caught.value.message()

"""Hostile and malformed input against a real server: each bad request fails alone with a 4xx.

Deeply nested JSON, malformed multipart, register bodies of the wrong types, tensors of the wrong
shape: every one is a JSON error naming the problem, the worker that saw it lives on and ``/ping``
stays healthy.
"""

from __future__ import annotations

import json

import pytest

from tsf.json_body import MAX_JSON_DEPTH
from tsf.testing import assert_error

pytestmark = pytest.mark.slow

NESTED = b"[" * 1000 + b"]" * 1000
UNCLOSED = b"[" * 1000
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def pids_unchanged(served):
    """The server's worker pids before the test, checked unchanged (and /ping 200) after it."""
    before = sorted(served.worker_pids())
    yield
    assert sorted(served.worker_pids()) == before, served.log()[-3000:]
    assert served.get("/ping").status_code == 200


@pytest.mark.parametrize("body", [NESTED, UNCLOSED, b'{"data":' * 1000])
@pytest.mark.parametrize("ctype", ["application/json", "application/octet-stream",
                                   "text/plain"])
def test_deeply_nested_json_to_a_model_is_400_and_the_worker_lives(served, pids_unchanged,
                                                                    body, ctype):
    response = served.post("/predictions/mlp", data=body, headers={"Content-Type": ctype})
    assert_error(response, 400, "BadRequestException", "nested")
    assert served.post("/predictions/mlp", json=[1, 2, 3, 4]).status_code == 200


def test_nesting_at_the_limit_is_still_parsed(served, pids_unchanged):
    deep = b"[" * MAX_JSON_DEPTH + b"1" + b"]" * MAX_JSON_DEPTH
    response = served.post("/predictions/echo", data=deep, headers=JSON)
    assert response.status_code == 200, response.text


def test_brackets_inside_strings_do_not_count_as_nesting(served, pids_unchanged):
    body = json.dumps({"text": "[" * 5000}).encode()
    response = served.post("/predictions/echo", data=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == {"text": "[" * 5000}


def test_deeply_nested_json_to_register_is_400(served):
    response = served.manage("POST", "/models", data=NESTED, headers=JSON)
    assert_error(response, 400, "BadRequestException", "nested")


@pytest.mark.parametrize("path", ["/v1/models/mlp:predict", "/v2/models/mlp/infer"])
def test_deeply_nested_json_to_kserve_is_400(served, pids_unchanged, path):
    for body in (NESTED, UNCLOSED, b'{"instances": ' + NESTED + b"}"):
        assert_error(served.post(path, data=body, headers=JSON), 400, "BadRequestException",
                     "nested")


def test_deep_tensor_data_in_oip_is_400(served, pids_unchanged):
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ' + NESTED + \
        b"}]}"
    assert_error(served.post("/v2/models/mlp/infer", data=body, headers=JSON), 400,
                 "BadRequestException", "nested")


@pytest.mark.parametrize("body, field", [
    ({"url": 123}, "url"), ({"url": ["mlp.mar"]}, "url"),
    ({"url": "mlp.mar", "model_name": []}, "model_name"),
    ({"url": "mlp.mar", "model_name": "t1", "handler": 5}, "handler"),
    ({"url": "mlp.mar", "model_name": "t2", "sha256": {"a": 1}}, "sha256"),
    ({"url": "mlp.mar", "model_name": "t3", "batch_size": "x"}, "batch_size"),
    ({"url": "mlp.mar", "model_name": "t4", "initial_workers": 1.5}, "initial_workers"),
    ({"url": "mlp.mar", "model_name": "t5", "max_batch_delay": True}, "max_batch_delay"),
    ({"url": "mlp.mar", "model_name": "t6", "response_timeout": 10**40}, "response_timeout"),
    ({"url": "mlp.mar", "model_name": "t7", "synchronous": {}}, "synchronous"),
])
def test_register_body_of_the_wrong_types_is_400_naming_the_field(served, body, field):
    response = served.manage("POST", "/models", json=body)
    assert_error(response, 400, "BadRequestException", field)
    names = [m["modelName"] for m in served.manage("GET", "/models").json()["models"]]
    assert body.get("model_name") not in names


def test_register_query_counts_must_be_integers(served):
    response = served.manage("POST", "/models", params={"url": "mlp.mar", "model_name": "q1",
                                                        "batch_size": "2.5"})
    assert_error(response, 400, "BadRequestException", "batch_size")


@pytest.mark.parametrize("ctype, body, problem", [
    ("multipart/form-data", b"no boundary here", "boundary"),
    ("multipart/form-data; boundary=xx", b"--xx\r\nno headers\r\n--xx--\r\n", "headers"),
    ("multipart/form-data; boundary=xx",
     b"--xx\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--xx--\r\n", "name"),
])
def test_malformed_multipart_is_400_naming_the_problem(served, pids_unchanged, ctype, body,
                                                       problem):
    response = served.post("/predictions/echo", data=body, headers={"Content-Type": ctype})
    assert_error(response, 400, "BadRequestException", problem)


def test_kserve_v1_post_without_a_verb_is_404(served):
    response = served.post("/v1/models/mlp", json={"instances": [[1, 2, 3, 4]]})
    assert_error(response, 404, "ResourceNotFoundException", ":predict")


@pytest.mark.parametrize("sample", [
    [1, 2], [1, 2, 3, 4, 5], [[1, 2], [3]], ["a", "b", "c", "d"], [], 5, [[[[]]]],
    [10**30, 1, 2, 3], [None, 1, 2, 3], {"data": [1, 2]}, [{"a": 1}],
])
def test_wrong_shaped_or_typed_tensors_to_the_base_handler_are_400(served, pids_unchanged,
                                                                   sample):
    assert_error(served.post("/predictions/mlp", json=sample), 400, "BadRequestException")


def test_a_wrong_shape_in_a_batch_fails_alone(served):
    from concurrent.futures import ThreadPoolExecutor

    samples = [[1, 2, 3, 4]] * 4 + [[1, 2]] + [[1, 2, 3, 4]] * 3
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda s: served.post("/predictions/mlp", json=s).status_code,
                              samples))
    assert codes == [200] * 4 + [400] + [200] * 3, codes

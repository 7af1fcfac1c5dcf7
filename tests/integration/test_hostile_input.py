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

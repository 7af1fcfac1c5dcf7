"""CORS with TorchServe's keys: the configured headers on every answer of the three APIs (errors
included), a browser's preflight answered 204 without a token, a handler's own header winning,
and ``OPTIONS /`` still the OpenAPI description."""

from __future__ import annotations

import textwrap
import time

import pytest
import requests

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.server.cors import CorsPolicy
from tsf.testing import ServerProcess, assert_error

TOKEN = "cors-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METHODS = "GET, POST, PUT, DELETE, OPTIONS"
HEADERS = "Authorization, Content-Type, X-Request-Id"

HANDLER = '''
    def handle(data, context):
        if data is None:
            return None
        bodies = [bytes(row.get("body") or b"").decode() for row in data]
        for i, body in enumerate(bodies):
            if body == "own-origin":  # the handler's header wins, as in TorchServe
                context.set_response_header(i, "Access-Control-Allow-Origin",
                                            "https://handler.example")
        return [{"echo": body} for body in bodies]
'''


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory):
    src, store = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("store")
    handler = src / "cors_handler.py"
    handler.write_text(textwrap.dedent(HANDLER))
    write_archive(ArchiveSpec(model_name="corsy", handler=str(handler), export_path=str(store)))
    server = ServerProcess(model_store=store, models=["corsy=corsy.mar"], config={
        "cors_allowed_origin": "*", "cors_allowed_methods": METHODS,
        "cors_allowed_headers": HEADERS},
        env={"TSF_INFERENCE_TOKEN": TOKEN, "TSF_MANAGEMENT_TOKEN": TOKEN})
    try:
        for _ in range(300):
            if server.get("/ping").status_code == 200:
                break
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def assert_cors(response: requests.Response) -> None:
    assert response.headers["Access-Control-Allow-Origin"] == "*", response.headers
    assert response.headers["Access-Control-Allow-Methods"] == METHODS
    assert response.headers["Access-Control-Allow-Headers"] == HEADERS


@pytest.mark.slow
def test_every_answer_carries_the_headers(cors_server):
    origin = {"Origin": "https://app.example"}
    answer = cors_server.post("/predictions/corsy", data="hi", headers={**origin, **AUTH})
    assert answer.status_code == 200 and answer.json() == {"echo": "hi"}
    assert_cors(answer)
    assert_cors(cors_server.get("/ping"))  # no Origin header: sent all the same, as TorchServe
    assert_cors(assert_error_response(cors_server.post("/predictions/corsy", data="x"), 401))
    assert_cors(assert_error_response(cors_server.post("/predictions/nope", headers=AUTH), 404))
    assert_cors(assert_error_response(cors_server.get("/no/such/route"), 404))
    assert_cors(cors_server.manage("GET", "/models", headers=AUTH))
    assert_cors(cors_server.request("GET", cors_server.metrics, "/metrics"))


def assert_error_response(response: requests.Response, code: int) -> requests.Response:
    assert_error(response, code)
    return response


@pytest.mark.slow
def test_preflight_is_answered_without_a_token(cors_server):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    for base, path in ((cors_server.inference, "/predictions/corsy"),
                       (cors_server.inference, "/predictions/corsy/1.0"),
                       (cors_server.management, "/models"),
                       (cors_server.management, "/models/corsy")):
        answer = cors_server.request("OPTIONS", base, path, headers=preflight)
        assert answer.status_code == 204, (path, answer.status_code, answer.text)
        assert answer.content == b""
        assert_cors(answer)


@pytest.mark.slow
def test_options_root_is_still_the_openapi_description(cors_server):
    for base in (cors_server.inference, cors_server.management):
        answer = cors_server.request("OPTIONS", base, "/", headers=AUTH)
        assert answer.status_code == 200
        assert answer.json()["openapi"].startswith("3.")
        assert_cors(answer)


@pytest.mark.slow
def test_a_handlers_own_header_wins(cors_server):
    answer = cors_server.post("/predictions/corsy", data="own-origin", headers=AUTH)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "https://handler.example"
    assert answer.headers["Access-Control-Allow-Methods"] == METHODS


def test_a_list_of_origins_sends_back_the_requests_when_listed():
    policy = CorsPolicy("https://a.example, https://b.example", "", "")
    assert policy.answer_headers("https://b.example") == [
        ("Vary", "Origin"), ("Access-Control-Allow-Origin", "https://b.example")]
    assert policy.answer_headers("https://evil.example") == [("Vary", "Origin")]
    assert CorsPolicy("*", "GET", "").answer_headers(None) == [
        ("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "GET")]


def test_no_key_no_policy():
    class Config:
        cors_allowed_origin = cors_allowed_methods = cors_allowed_headers = ""

    assert CorsPolicy.from_config(Config()) is None

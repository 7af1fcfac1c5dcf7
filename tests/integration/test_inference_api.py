"""Inference API against a real server: predictions for every model kind and every error path."""

from __future__ import annotations

import pytest

from tsf.testing import assert_error


def test_ping_is_healthy_when_all_workers_are_up(served):
    response = served.get("/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "Healthy"}


@pytest.mark.parametrize("model", ["mlp", "exported"])
def test_torchscript_and_export_models_predict_json(served, model):
    response = served.post(f"/predictions/{model}", json=[1.0, 2.0, 3.0, 4.0])
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    out = response.json()
    assert len(out) == 3 and all(isinstance(v, float) for v in out)
    # same input, same (deterministic) answer, also through {"data": ...} and integers
    again = served.post(f"/predictions/{model}", json={"data": [1, 2, 3, 4]}).json()
    assert again == pytest.approx(out)


def test_eager_state_dict_model_with_model_file(served):
    out = served.post("/predictions/eager", json=[[0.5, -1, 2, 0]]).json()
    assert len(out) == 1 and len(out[0]) == 2
    assert sum(out[0]) == pytest.approx(1.0, abs=1e-5)  # the model ends in softmax


def test_explicit_version_in_path(served):
    assert served.post("/predictions/mlp/1.0", json=[0, 0, 0, 1]).status_code == 200
    assert_error(served.post("/predictions/mlp/9.9", json=[0, 0, 0, 1]), 404,
                 "ModelVersionNotFoundException")


def test_custom_pluggy_handler_sees_headers_and_request_id(served):
    response = served.post("/predictions/echo", data=b"raw bytes",
                           headers={"X-Test": "hello", "X-Request-Id": "req-42",
                                    "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["echo"] == "raw bytes"
    assert body["header"] == "hello"
    assert body["request_id"] == "req-42"
    assert response.headers["X-Request-Id"] == "req-42"


def test_json_body_reaches_handler_parsed_and_text_as_str(served):
    assert served.post("/predictions/echo", json={"a": [1, 2]}).json()["echo"] == {"a": [1, 2]}
    text = served.post("/predictions/echo", data="héllo".encode(),
                       headers={"Content-Type": "text/plain; charset=utf-8"}).json()
    assert text["echo"] == "héllo"


def test_multipart_form_fields_arrive_by_name(served):
    response = served.post("/predictions/fn", files={"body": ("x.txt", b"world", "text/plain")})
    assert response.status_code == 200, response.text
    assert response.text == "hello world"
    assert response.headers["Content-Type"].startswith("text/plain")


def test_torchserve_style_class_handler_and_response_headers(served):
    response = served.post("/predictions/tsclass", json=[1, 2, 3])
    assert response.status_code == 200, response.text
    assert response.json() == {"model": "tsclass", "sum": 6}
    assert response.headers["X-Handler"] == "torchserve-style"


def test_unknown_model_is_404(served):
    assert_error(served.post("/predictions/nope", json=[1]), 404, "ModelNotFoundException",
                 "nope")


def test_malformed_json_is_400_naming_the_request(served):
    response = served.post("/predictions/mlp", data=b"{not json",
                           headers={"Content-Type": "application/json",
                                    "X-Request-Id": "bad-1"})
    assert_error(response, 400, "BadRequestException", "bad-1")


def test_wrong_shape_for_model_is_a_clear_error(served):
    body = assert_error(served.post("/predictions/mlp", json=[1, 2]), 400, "BadRequestException")
    assert "mat1" in body["message"] or "shape" in body["message"]


def test_non_numeric_input_is_400(served):
    assert_error(served.post("/predictions/mlp", json=["a", "b"]), 400, "BadRequestException")


def test_oversize_body_is_413_and_server_keeps_serving(served):
    response = served.post("/predictions/mlp", data=b"x" * 200_000,
                           headers={"Content-Type": "application/octet-stream"})
    assert_error(response, 413, "RequestEntityTooLargeException", "max_request_size")

    def chunks():
        for _ in range(30):
            yield b"y" * 10_000

    chunked = served.post("/predictions/mlp", data=chunks(),
                          headers={"Content-Type": "application/octet-stream"})
    assert_error(chunked, 413, "RequestEntityTooLargeException")
    assert served.post("/predictions/mlp", json=[1, 2, 3, 4]).status_code == 200


def test_unknown_path_and_method_are_json_errors(served):
    assert_error(served.get("/nothing/here"), 404, "ResourceNotFoundException")
    assert_error(served.get("/predictions/mlp"), 405, "MethodNotAllowedException")
    assert_error(served.request("GET", served.metrics, "/nope"), 404)


def test_openapi_description_on_options_and_api_description(served):
    for response in (served.request("OPTIONS", served.inference, "/"),
                     served.get("/api-description")):
        assert response.status_code == 200
        spec = response.json()
        assert spec["openapi"].startswith("3.")
        assert "/predictions/{model_name}" in spec["paths"]
        assert "post" in spec["paths"]["/v2/models/{model_name}/versions/{model_version}/infer"]
    management = served.request("OPTIONS", served.management, "/").json()
    assert "/models/{model_name}/{model_version}/set-default" in management["paths"]


def test_one_bad_request_in_a_batch_fails_alone(served):
    from concurrent.futures import ThreadPoolExecutor

    # a picky model that batches up to 8 requests, waiting up to 1 s for them
    assert served.register("picky.mar", model_name="pickybatch", batch_size=8,
                           max_batch_delay=1000).status_code == 200
    bodies = ["good"] * 5 + ["bad"] + ["good"] * 2

    def send(i_body):
        i, body = i_body
        return served.post("/predictions/pickybatch", data=body.encode(),
                           headers={"X-Request-Id": f"r{i}", "Content-Type": "text/plain"})

    try:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(send, enumerate(bodies)))
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 7 and codes[5] == 400, codes
        assert "r5" in responses[5].json()["message"]
        # the bad request really shared a batch with good ones: fewer batches than requests
        text = served.scrape()
        prefix = 'tsf_batch_size_{}{{model_name="pickybatch"'
        count = next(l for l in text.splitlines() if l.startswith(prefix.format("count")))
        total = next(l for l in text.splitlines() if l.startswith(prefix.format("sum")))
        assert float(total.split()[-1]) == 8 and float(count.split()[-1]) < 8, (count, total)
    finally:
        served.manage("DELETE", "/models/pickybatch")


def test_metrics_count_requests_with_torchserve_names(served):
    served.post("/predictions/mlp", json=[1, 2, 3, 4])
    text = served.scrape()
    assert 'ts_inference_requests_total{model_name="mlp",model_version="default"' in text
    assert "ts_inference_latency_microseconds{" in text
    assert "ts_queue_latency_microseconds{" in text
    assert 'tsf_request_duration_seconds_bucket{kind="predict",le="' in text
    assert "# TYPE ts_inference_requests_total counter" in text
    assert 'tsf_stage_duration_seconds_count{model_name="mlp",model_version="1.0",' \
           'stage="inference"}' in text
    assert "tsf_batch_size_bucket" in text
    assert 'tsf_workers_alive{model_name="mlp",model_version="1.0"} 1.0' in text


def test_custom_handler_metrics_reach_the_front_end(served):
    served.post("/predictions/echo", json=[1])
    text = served.scrape()
    line = next(l for l in text.splitlines() if l.startswith("echo_items{"))
    assert 'kind="x"' in line and 'model_name="echo"' in line
    assert float(line.rsplit(" ", 1)[1]) >= 1


def test_metrics_name_filter(served):
    text = served.request("GET", served.metrics, "/metrics",
                          params={"name[]": "tsf_batch_size"}).text
    assert "tsf_batch_size" in text and "ts_inference_requests_total" not in text


def test_explaining_a_model_without_an_explainer_is_501(served):
    r = served.post("/explanations/mlp", json=[1, 2, 3, 4])
    assert_error(r, 501, None, "declares no task an explainer knows")
    assert served.post("/predictions/mlp", json=[1, 2, 3, 4]).status_code == 200
    assert 'kind="explain"' in served.scrape()

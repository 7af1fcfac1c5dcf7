"""Capture records in SageMaker Data Capture's format, and what tsf reads from bodies."""

from __future__ import annotations

import base64
import io
import json

import pytest

from tsf.errors import BadRequest
from tsf.monitoring.baseline import check_rows, record_row
from tsf.monitoring.features import input_features, prediction_of
from tsf.monitoring.records import (CaptureRecord, decode_side, file_name, hour_prefix,
                                    inference_id_of, iso_time, parse_time)

AT = 1796617777.125  # 2026-12-07T04:29:37.125Z


def record(**changes) -> CaptureRecord:
    values = dict(event_id="rid", model="m", version="1.0", time=AT,
                  request_ctype="application/json", request_body=b'{"x": 1}', request_size=8,
                  response_ctype="application/json", response_body=b'{"label": 1}',
                  response_size=12, inference_id="inf-1")
    values.update(changes)
    return CaptureRecord(**values)


def test_sagemaker_record_format():
    line = record().to_json_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                              "data": '{"x": 1}', "encoding": "JSON"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": '{"label": 1}', "encoding": "JSON"}},
        "eventMetadata": {"eventId": "rid", "inferenceId": "inf-1",
                          "inferenceTime": "2026-12-07T04:29:37.125Z", "model": "m",
                          "modelVersion": "1.0"},
        "eventVersion": "0"}


def test_json_lines_are_the_sagemaker_document():
    for changes in ({"event_id": 'q"\\', "inference_id": "line\nbreak"},
                    {"request_body": '{"é": "\u2028"}'.encode(), "request_size": 20},
                    {"request_ctype": "image/png", "request_body": b"\x89PNG\x00",
                     "request_size": 5000, "response_body": None}):
        line = record(**changes).to_json_line()
        assert json.loads(line) == record(**changes).to_sagemaker()


def test_a_records_json_line_is_made_once_and_not_part_of_its_value():
    captured = record()
    line = captured.to_json_line()
    assert captured.to_json_line() is line  # the sinks reuse what the event loop made
    assert captured == record() and "line" not in repr(captured)


def test_binary_csv_truncated_and_one_sided_records():
    jpeg = b"\xff\xd8\xff\xe0binary"
    doc = record(request_ctype="image/jpeg", request_body=jpeg, request_size=len(jpeg),
                 response_ctype="text/csv", response_body=b"0.25", response_size=4,
                 inference_id=None).to_sagemaker()
    side = doc["captureData"]["endpointInput"]
    assert side["encoding"] == "BASE64" and base64.b64decode(side["data"]) == jpeg
    assert decode_side(side) == jpeg
    assert doc["captureData"]["endpointOutput"]["encoding"] == "CSV"
    assert "inferenceId" not in doc["eventMetadata"]
    cut = record(request_body=b'{"x": 1', request_size=100_000_000,
                 response_body=None).to_sagemaker()
    side = cut["captureData"]["endpointInput"]
    assert side["truncatedFrom"] == 100_000_000 and side["encoding"] == "BASE64"
    assert base64.b64decode(side["data"]) == b'{"x": 1'
    assert "endpointOutput" not in cut["captureData"]
    bad_utf8 = record(request_body=b'{"x": "\xff"}', request_size=10).to_sagemaker()
    assert bad_utf8["captureData"]["endpointInput"]["encoding"] == "BASE64"


def test_layout_and_times():
    assert hour_prefix("m", "1.0", AT) == "m/1.0/2026/12/07/04"
    assert hour_prefix("m", "../x", AT).startswith("m/.._x/")
    assert hour_prefix("m", "..", AT).startswith("m/_../")
    name = file_name(AT)
    assert name.startswith("29-37-125-") and name.endswith(".jsonl") and len(name) == 52
    assert iso_time(AT) == "2026-12-07T04:29:37.125Z"
    assert parse_time(iso_time(AT)) == pytest.approx(AT, abs=0.001)
    assert inference_id_of({"x-amzn-sagemaker-inference-id": "a"}) == "a"
    assert inference_id_of({"X-Inference-Id": "b", "x-amzn-sagemaker-inference-id": "a"}) == "b"
    assert inference_id_of({}) is None


@pytest.mark.parametrize("ctype, body, features", [
    ("application/json", b'{"age": 31, "region": "eu", "vip": true, "deep": {"a": 1}}',
     {"age": 31.0, "region": "eu", "vip": "true"}),
    ("application/json", b"[[1, 2, 3]]", {"x0": 1.0, "x1": 2.0, "x2": 3.0}),
    ("application/json", json.dumps([list(range(20))]).encode(),
     {"mean": 9.5, "std": pytest.approx(5.766, abs=1e-3), "min": 0.0, "max": 19.0}),
    ("application/json", b'{"instances": [{"age": 2}, {"age": 5}]}', {"age": 2.0}),
    ("application/json", (b'{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", '
                          b'"data": [1, 3]}]}'),
     {"X.mean": 2.0, "X.std": 1.0, "X.min": 1.0, "X.max": 3.0}),
    ("application/json", b'{"data": [2, 4]}', {"data.mean": 3.0, "data.std": 1.0,
                                                 "data.min": 2.0, "data.max": 4.0}),
    ("text/csv", b"1.5,abc,3\n9,9,9", {"c0": 1.5, "c1": "abc", "c2": 3.0}),
    ("application/json", b"not json", {}),
    ("application/json", b"[" * 5000, {}),
    ("application/octet-stream", b"\x00\x01", {}),
])
def test_input_features(ctype, body, features):
    assert input_features(ctype, body) == features


def test_image_features_and_truncated_bodies():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 200, 200)).save(buffer, format="JPEG")
    features = input_features("application/octet-stream", buffer.getvalue())
    assert features["width"] == 64.0 and features["height"] == 48.0
    assert features["brightness"] == pytest.approx(200, abs=3)
    assert input_features("image/png", b"\x89PNG broken") == {}
    assert input_features("application/json", b'{"a": 1}', truncated=True) == {}


@pytest.mark.parametrize("ctype, body, key, expected", [
    ("application/json", b'{"label": 1, "p": 0.9}', "", ("1", None)),
    ("application/json", b'{"tabby": 0.7, "tiger": 0.2}', "", ("tabby", 0.7)),
    ("application/json", b"[[0.1, 0.7, 0.2]]", "", ("1", 0.7)),
    ("application/json", b'{"predictions": [{"class": "cat"}]}', "", ("cat", None)),
    ("application/json", b'{"outputs": [{"name": "y", "data": [0.2, 0.8]}]}', "", ("1", 0.8)),
    ("application/json", b"0.83", "", (None, 0.83)),
    ("application/json", b"2", "", ("2", None)),
    ("application/json", b'{"result": {"top": ["dog", 1]}}', "result.top.0", ("dog", None)),
    ("text/plain", b" spam \n", "", ("spam", None)),
    ("application/json", b"{}", "", (None, None)),
    ("application/json", b"broken", "", (None, None)),
])
def test_prediction_of(ctype, body, key, expected):
    assert prediction_of(ctype, body, key) == expected


def test_baseline_rows_from_records_and_files():
    row = record_row(record(request_body=b"[[1, 2]]", request_size=8).to_sagemaker())
    assert row == {"x0": 1.0, "x1": 2.0, "prediction": "1"}
    assert check_rows({"format": "tsf-baseline/1", "rows": [{"a": 1, "b": "x"}]}) == \
        [{"a": 1.0, "b": "x"}]
    for bad in ({"rows": [{"a": 1}]}, {"format": "tsf-baseline/1", "rows": []},
                {"format": "tsf-baseline/1", "rows": [{"a": float("nan")}]},
                {"format": "tsf-baseline/1", "rows": [{"a": [1]}]}, [1]):
        with pytest.raises(BadRequest):
            check_rows(bad)


def test_warmup_inputs_give_baseline_rows(tmp_path):
    from tsf.monitoring.baseline import warmup_rows

    (tmp_path / "warm.json").write_text(json.dumps([{"x": 2, "region": "b"}, "text"]))
    config = {"warmup": {"inputs": [{"x": 1, "region": "a"}, [[1, 2]]], "file": "warm.json"}}
    assert warmup_rows(config, str(tmp_path)) == [{"x": 1.0, "region": "a"},
                                                   {"x0": 1.0, "x1": 2.0},
                                                   {"x": 2.0, "region": "b"}]
    assert warmup_rows({}, str(tmp_path)) == []
    assert warmup_rows({"warmup": {"file": "../outside.json"}}, str(tmp_path)) == []

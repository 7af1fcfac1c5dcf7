"""The ``capture:`` settings: defaults, and a 400 naming the key of anything malformed."""

from __future__ import annotations

import pytest

from tsf.config.capture import CaptureSettings, capture_settings, label_text
from tsf.config.settings import ServerConfig, model_settings
from tsf.errors import BadRequest


def test_defaults_and_off():
    assert capture_settings(None) is None
    assert capture_settings(False) is None
    assert capture_settings({"enabled": False}) is None
    settings = capture_settings(True)
    assert settings == CaptureSettings()
    assert settings.sinks == {"jsonl": {}} and settings.requests and settings.responses
    assert settings.drift is not None and settings.drift.baseline == "capture"


def test_values_are_read():
    settings = capture_settings({
        "sampling_percent": 25, "mode": "response", "max_record_bytes": 1024,
        "sinks": {"jsonl": None, "s3": {"url": "s3://b/p"}}, "groups": ["region", "age"],
        "positive_class": 1, "prediction_key": "label", "drift": False})
    assert settings.sampling_percent == 25.0 and not settings.requests and settings.responses
    assert settings.sinks == {"jsonl": {}, "s3": {"url": "s3://b/p"}}
    assert settings.groups == ("region", "age") and settings.positive_class == "1"
    assert settings.drift is None
    assert capture_settings({"sinks": "jsonl"}).sinks == {"jsonl": {}}
    assert capture_settings({"drift": {"baseline": "warmup", "window_size": 50}}).drift \
        .min_samples == 50


@pytest.mark.parametrize("value, named", [
    ({"sampling_percent": 300}, "capture.sampling_percent"),
    ({"sampling_percent": "all"}, "capture.sampling_percent"),
    ({"mode": "everything"}, "capture.mode"),
    ({"max_record_bytes": -1}, "capture.max_record_bytes"),
    ({"max_record_bytes": True}, "capture.max_record_bytes"),
    ({"sinks": []}, "capture.sinks"),
    ({"sinks": {"s3": "s3://b"}}, "capture.sinks.s3"),
    ({"groups": "region"}, "capture.groups"),
    ({"groups": [1]}, "capture.groups"),
    ({"feedback": "yes"}, "capture.feedback"),
    ({"drift": {"baseline": "yesterday"}}, "capture.drift.baseline"),
    ({"drift": {"window_size": 2}}, "capture.drift.window_size"),
    ({"drift": {"min_samples": 900, "window_size": 100}}, "capture.drift.min_samples"),
    ({"drift": {"colour": 1}}, "capture.drift.colour"),
    ({"drift": 3}, "capture.drift"),
    ({"samplingPercent": 5}, "capture.samplingPercent"),
    ("yes", "capture must be a mapping"),
])
def test_malformed_values_name_their_key(value, named):
    with pytest.raises(BadRequest) as info:
        capture_settings(value)
    assert named in info.value.message


def test_model_config_yaml_names_the_file():
    with pytest.raises(BadRequest) as info:
        model_settings(ServerConfig(), {"capture": {"mode": "all"}}, {})
    assert "model-config.yaml: capture.mode" in info.value.message
    settings = model_settings(ServerConfig(), {"capture": {"sampling_percent": 10}}, {})
    assert settings.capture.sampling_percent == 10.0
    assert model_settings(ServerConfig(), {}, {}).capture is None


def test_labels_compare_as_text():
    assert [label_text(v) for v in (1, 1.0, "1", True, 2.5)] == ["1", "1", "1", "true", "2.5"]

"""TorchServe's ``models`` key: parsed with TorchServe's rules, merged with its precedence."""

from __future__ import annotations

import json

import pytest

from tsf.config.models_key import parse_models
from tsf.config.settings import ServerConfig, model_settings
from tsf.errors import BadRequest

MODELS = {"noop": {"1.0": {"defaultVersion": True, "marName": "noop.mar", "minWorkers": 2,
                           "maxWorkers": 3, "batchSize": 4, "maxBatchDelay": 0,
                           "responseTimeout": 90, "runtimeType": "python"}}}


def test_entries_by_name_and_version():
    entries = parse_models(json.dumps(MODELS))
    # maxBatchDelay 0 counts as not set, as in TorchServe; marName is not read
    assert entries.settings("noop", "1.0") == {"min_workers": 2, "max_workers": 3,
                                               "batch_size": 4, "response_timeout": 90}
    assert entries.is_default("noop", "1.0") and not entries.is_default("noop", "2.0")
    assert entries.settings("other", "1.0") == {} and parse_models("").entries == {}


def test_precedence_request_then_yaml_then_models_then_defaults():
    config = ServerConfig(batch_size=1, max_batch_delay=100, default_response_timeout=120)
    configured = parse_models(json.dumps(MODELS)).settings("noop", "1.0")
    merged = model_settings(config, {"batchSize": 8}, {"response_timeout": 30}, configured)
    assert merged.batch_size == 8             # model-config.yaml beats the models key
    assert merged.response_timeout == 30      # the register request beats both
    assert (merged.min_workers, merged.max_workers) == (2, 3)  # the models key beats defaults
    assert merged.max_batch_delay == 100      # not set anywhere: the server's default


@pytest.mark.parametrize("text, fragment", [
    ("{nope", "not valid JSON"), ("[]", "JSON object"), ('{"m": 1}', "map versions"),
    ('{"m": {"1.0": {"batchSize": "4"}}}', "batchSize must be an integer"),
    ('{"m": {"1.0": {"runtimeType": "LSP"}}}', "runtimeType"),
    ('{"m": {"1.0": {"defaultVersion": "yes"}}}', "defaultVersion"),
])
def test_bad_values_stop_the_start(text, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_models(text)

"""TorchServe / KServe / SageMaker settings: TS_* variables, model_snapshot, SAGEMAKER_*, CLI."""

from __future__ import annotations

import json

import pytest

from tsf.cli import build_parser
from tsf.config.settings import load_config, ts_env_values
from tsf.errors import BadRequest
from tsf.serving.snapshot import parse_snapshot


def test_ts_variables_apply_only_when_the_config_enables_them(tmp_path):
    env = {"TS_SERVICE_ENVELOPE": "kservev2", "TS_JOB_QUEUE_SIZE": "7", "TS_": "x"}
    props = tmp_path / "config.properties"
    props.write_text("job_queue_size=50\n")
    assert load_config(str(props), environ=env).job_queue_size == 50
    props.write_text("job_queue_size=50\nenable_envvars_config=true\n")
    config = load_config(str(props), environ=env)
    assert (config.job_queue_size, config.service_envelope) == (7, "kservev2")
    # tsf's own variables and the command line still win
    config = load_config(str(props), cli={"job_queue_size": 9},
                         environ={**env, "TSF_JOB_QUEUE_SIZE": "8"})
    assert config.job_queue_size == 9
    assert load_config(str(props), environ={**env, "TSF_JOB_QUEUE_SIZE": "8"}
                       ).job_queue_size == 8
    assert ts_env_values({"TS_MODEL_STORE": "/m", "TSF_X": "y", "PATH": "/bin"}) == {
        "model_store": "/m"}


def test_unknown_service_envelope_is_refused():
    with pytest.raises(BadRequest, match="service_envelope 'soap'"):
        load_config(cli={"service_envelope": "soap"}, environ={})
    assert load_config(cli={"service_envelope": "kserve"}, environ={}).service_envelope == \
        "kserve"


def test_snapshot_lists_versions_with_their_settings():
    text = json.dumps({"name": "startup.cfg", "modelCount": 1, "models": {"mnist": {
        "1.0": {"defaultVersion": True, "marName": "mnist.mar", "minWorkers": 2,
                "maxWorkers": 5, "batchSize": 4, "maxBatchDelay": 10, "responseTimeout": 60},
        "2.0": {"marName": "mnist2.mar"}}}})
    first, second = parse_snapshot(text)
    assert (first.name, first.version, first.mar_name, first.default) == \
        ("mnist", "1.0", "mnist.mar", True)
    assert first.settings == {"initial_workers": 2, "max_workers": 5, "batch_size": 4,
                              "max_batch_delay": 10, "response_timeout": 60}
    request = first.request()  # every field reaches the registration, maxWorkers included
    assert (request.initial_workers, request.max_workers, request.batch_size,
            request.max_batch_delay, request.response_timeout) == (2, 5, 4, 10, 60)
    assert request.settings()["max_workers"] == 5
    assert (second.version, second.default, second.settings) == ("2.0", False, {})
    assert parse_snapshot("") == []


@pytest.mark.parametrize("text, fragment", [
    ("{nope", "not valid JSON"),
    ('{"models": []}', '"models" object'),
    ('{"models": {"m": {}}}', "must map versions"),
    ('{"models": {"m": {"1.0": {"minWorkers": 1}}}}', "has no marName"),
    ('{"models": {"m": {"1.0": {"marName": "m.mar", "batchSize": [4]}}}}',
     "batchSize must be an integer"),
])
def test_bad_snapshots_say_what_is_wrong(text, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_snapshot(text)


def test_sagemaker_variables_become_settings(tmp_path):
    env = {"SAGEMAKER_BIND_TO_PORT": "9123", "SAGEMAKER_TS_BATCH_SIZE": "4",
           "SAGEMAKER_TS_MAX_BATCH_DELAY": "25", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30",
           "SAGEMAKER_TS_RESPONSE_TIMEOUT": "45", "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
           "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2", "SAGEMAKER_BASE_DIR": str(tmp_path)}
    config = load_config(cli={"sagemaker": True}, environ=env)
    assert config.inference_address == "http://0.0.0.0:9123"  # asked for: SageMaker mode
    assert (config.batch_size, config.max_batch_delay, config.default_response_timeout,
            config.default_workers_per_model) == (4, 25, 45, 3)
    assert config.max_request_size == 2 * 1024 * 1024
    assert config.sagemaker_model_dir == str(tmp_path / "model")
    assert config.model_store == str(tmp_path / "model") and not config.sagemaker_multi_model
    config = load_config(cli={"sagemaker": True, "inference_address": "http://127.0.0.1:0"},
                         environ={**env, "SAGEMAKER_MAX_REQUEST_SIZE": "1000",
                                  "SAGEMAKER_MULTI_MODEL": "true"})
    assert config.inference_address == "http://127.0.0.1:0"  # the command line wins
    assert config.max_request_size == 1000  # SAGEMAKER_MAX_REQUEST_SIZE before the MB one
    assert config.sagemaker_multi_model and config.model_store == str(tmp_path / "models")


def test_sagemaker_folders_replace_an_image_configs_model_store(tmp_path):
    props = tmp_path / "config.properties"
    props.write_text("model_store=/home/model-server/model-store\nload_models=all\n")
    config = load_config(str(props), cli={"sagemaker": True}, environ={})
    assert (config.model_store, config.load_models) == ("/opt/ml/model", "")
    config = load_config(str(props), cli={"sagemaker": True, "model_store": "/m",
                                          "load_models": "x.mar"}, environ={})
    assert (config.model_store, config.load_models) == ("/m", "x.mar")


def test_sagemaker_mode_is_off_by_default_and_by_variables_alone():
    config = load_config(environ={"SAGEMAKER_BIND_TO_PORT": "9123"})
    assert not config.sagemaker and config.inference_address == "http://127.0.0.1:8080"
    on = load_config(environ={"TSF_SAGEMAKER": "true"})
    assert on.sagemaker and on.inference_address == "http://0.0.0.0:8080"
    assert on.model_store == "/opt/ml/model"


def test_torchserve_command_line_is_accepted():
    args = build_parser().parse_args([
        "serve", "--start", "--ncs", "--model-store=/mnt/models/model-store",
        "--ts-config=/mnt/models/config/config.properties", "--disable-token-auth",
        "--enable-model-api", "--models", "mnist=mnist.mar", "--log-config", "log4j2.xml",
        "--foreground"])
    assert args.start and args.ncs and args.disable_token_auth and args.enable_model_api
    assert args.config_file == "/mnt/models/config/config.properties"
    assert args.model_store == "/mnt/models/model-store" and args.models == ["mnist=mnist.mar"]
    assert build_parser().parse_args(["serve", "--no-config-snapshots"]).ncs

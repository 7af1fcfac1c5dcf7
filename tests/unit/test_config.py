"""Configuration precedence and per-model settings."""

from __future__ import annotations

import pytest

from tsf.config.settings import (Address, ServerConfig, guard_management_address, is_loopback,
                                 load_config, model_settings)
from tsf.errors import BadRequest


def test_defaults_are_loopback_and_closed():
    config = ServerConfig()
    assert "127.0.0.1" in config.inference_address
    assert Address.parse(config.management_address).port == 8081
    assert config.allowed_url_patterns == []


def test_precedence_file_then_env_then_cli(tmp_path):
    props = tmp_path / "config.properties"
    props.write_text("# TorchServe keys\njob_queue_size=50\nbatch_size=4\n"
                     "inference_address=http://0.0.0.0:9000\nenable_model_api=false\n")
    config = load_config(str(props), cli={"batch_size": "16"},
                         environ={"TSF_JOB_QUEUE_SIZE": "70", "TSF_BATCH_SIZE": "8"})
    assert config.job_queue_size == 70          # env beats file
    assert config.batch_size == 16              # cli beats env
    assert config.inference_address == "http://0.0.0.0:9000"
    assert config.enable_model_api is False


def test_bad_values_are_rejected():
    with pytest.raises(BadRequest):
        load_config(environ={"TSF_JOB_QUEUE_SIZE": "lots"})
    with pytest.raises(BadRequest):
        Address.parse("ftp://127.0.0.1:1")


def test_model_settings_rest_beats_yaml_beats_defaults():
    config = ServerConfig(batch_size=1, max_batch_delay=100)
    yaml_cfg = {"batchSize": 8, "maxBatchDelay": 50, "minWorkers": 2, "maxWorkers": 4,
                "responseTimeout": 10}
    settings = model_settings(config, yaml_cfg, {"batch_size": "16", "max_batch_delay": None})
    assert settings.batch_size == 16 and settings.max_batch_delay == 50
    assert (settings.min_workers, settings.max_workers, settings.response_timeout) == (2, 4, 10)
    with pytest.raises(BadRequest):
        model_settings(config, {}, {"batch_size": 0})


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True),
                                            ("localhost", True), ("[::1]", True),
                                            ("0.0.0.0", False), ("::", False),
                                            ("10.1.2.3", False), ("tsf.example", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_management_on_all_interfaces_without_token_is_kept_on_loopback(caplog):
    config = ServerConfig(management_address="http://0.0.0.0:8081",
                          inference_address="http://0.0.0.0:8080")
    with caplog.at_level("WARNING", logger="tsf"):
        guarded = guard_management_address(config, has_management_token=False)
    assert guarded.management_address == "http://127.0.0.1:8081"
    assert guarded.inference_address == "http://0.0.0.0:8080"     # only management is guarded
    assert guarded.grpc_management_address == "127.0.0.1:7071"   # already loopback
    assert "no management token" in caplog.text and "0.0.0.0:8081" in caplog.text


def test_management_on_all_interfaces_with_token_or_on_loopback_is_unchanged():
    exposed = ServerConfig(management_address="http://0.0.0.0:8081")
    assert guard_management_address(exposed, has_management_token=True) is exposed
    local = ServerConfig(management_address="http://127.0.0.1:9081")
    assert guard_management_address(local, has_management_token=False) is local


def test_grpc_management_on_all_interfaces_without_token_is_kept_on_loopback():
    config = ServerConfig(grpc_management_address="0.0.0.0:7071",
                          grpc_inference_address="0.0.0.0:7070")
    guarded = guard_management_address(config, has_management_token=False)
    assert guarded.grpc_management_address == "127.0.0.1:7071"
    assert guarded.grpc_inference_address == "0.0.0.0:7070"
    assert guard_management_address(config, has_management_token=True) is config


@pytest.mark.parametrize("text, port_key, expected", [
    ("127.0.0.1", 7070, ("127.0.0.1", 7070)),        # TorchServe's form: a host and a port key
    ("0.0.0.0", 0, ("0.0.0.0", 7070)),                # no port anywhere: TorchServe's default
    ("127.0.0.1:9000", 0, ("127.0.0.1", 9000)),       # tsf's form: host:port
    ("127.0.0.1:9000", 7075, ("127.0.0.1", 7075)),    # the port key wins, as in TorchServe
    ("127.0.0.1:0", 0, ("127.0.0.1", 0)),             # port 0: a free port
])
def test_grpc_addresses_take_torchserve_host_and_port_keys(text, port_key, expected):
    from tsf.config.settings import grpc_listen_address

    address = grpc_listen_address(text, port_key, 7070)
    assert (address.host, address.port) == expected


def test_grpc_management_address_without_port_is_guarded_and_keeps_its_form():
    config = ServerConfig(grpc_management_address="0.0.0.0", grpc_management_port=7071)
    guarded = guard_management_address(config, has_management_token=False)
    assert guarded.grpc_management_address == "127.0.0.1"
    local = ServerConfig(grpc_management_address="127.0.0.1", grpc_management_port=7071)
    assert guard_management_address(local, has_management_token=False) is local

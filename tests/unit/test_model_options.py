"""TorchServe model-config.yaml keys: each honoured or refused (400) at register time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tsf.archives.reader import ModelArchive
from tsf.config.model_options import model_options
from tsf.config.settings import ServerConfig, model_settings
from tsf.context import pick_device
from tsf.errors import BadRequest, Forbidden, ModelLoadError
from tsf.workers.requirements_env import env_key, model_environment


def test_supported_keys_are_read():
    options = model_options({"deviceType": "GPU", "deviceIds": [0, 2], "useJobTicket": True,
                             "clientTimeoutInMills": 250, "maxRetryTimeoutInSec": 30,
                             "jobQueueSize": 7, "parallelLevel": 1})
    assert (options.device_type, options.device_ids, options.use_job_ticket,
            options.client_timeout_ms, options.max_retry_timeout_s, options.job_queue_size) == \
        ("gpu", [0, 2], True, 250, 30, 7)
    assert model_options({}).client_timeout_ms == 0
    settings = model_settings(ServerConfig(), {"useJobTicket": "true"}, {})
    assert settings.options.use_job_ticket


@pytest.mark.parametrize("yaml, words", [
    ({"deviceType": "tpu"}, "deviceType"),
    ({"deviceIds": "0"}, "deviceIds"),
    ({"deviceIds": [0, -1]}, "deviceIds"),
    ({"deviceIds": [True]}, "deviceIds"),
    ({"deviceType": "cpu", "deviceIds": [0]}, "deviceType is cpu"),
    ({"clientTimeoutInMills": -5}, "clientTimeoutInMills"),
    ({"useJobTicket": "maybe"}, "useJobTicket"),
    ({"maxRetryTimeoutInSec": 1.5}, "maxRetryTimeoutInSec"),
    ({"jobQueueSize": 0}, "jobQueueSize"),
    ({"parallelType": "pp"}, "parallelType is not supported"),
    ({"parallelLevel": 4}, "parallelLevel is not supported"),
    ({"torchrun": {"nproc-per-node": 4}}, "torchrun is not supported"),
    ({"continuousBatching": "often"}, "continuousBatching must be true or false"),
    ({"sequenceBatching": True}, "sequenceBatching needs sequenceMaxIdleMSec > 0"),
    ({"sequenceBatching": True, "sequenceMaxIdleMSec": 10, "maxNumSequence": 0},
     "maxNumSequence"),
])
def test_bad_or_unsupported_values_are_refused_naming_the_key(yaml, words):
    with pytest.raises(BadRequest, match=words):
        model_settings(ServerConfig(), yaml, {})


def _engine_settings(handler: str, yaml: dict, batch_size: int | None = None):
    from tsf.serving.version_builder import engine_settings

    archive = ModelArchive(model_dir=".", manifest={"model": {"handler": handler}},
                           model_config=yaml)
    return engine_settings(archive, model_settings(ServerConfig(), yaml,
                                                   {"batch_size": batch_size}))


def test_continuous_batching_and_async_workers_are_for_engine_handlers_only():
    for key in ("continuousBatching", "asyncCommunication"):
        with pytest.raises(BadRequest, match=f"{key} needs a generation engine"):
            _engine_settings("image_classifier", {key: True})
        assert _engine_settings("image_classifier", {key: False}) is None
    engine = _engine_settings("llm", {"continuousBatching": True, "asyncCommunication": True,
                                      "maxNumSequence": 6})
    assert engine == {"max_sequences": 6, "engine": "transformers"}
    # TorchServe's vLLM example names the sequences in vllm_engine_config, its batch size too
    vllm = {"handler": {"vllm_engine_config": {"max_num_seqs": 16}}}
    assert _engine_settings("vllm_handler", vllm) == {"max_sequences": 16, "engine": "vllm"}
    assert _engine_settings("llm", {}, batch_size=8)["max_sequences"] == 8
    assert _engine_settings("llm", {})["max_sequences"] == 32
    with pytest.raises(BadRequest, match="sequenceBatching does not apply"):
        _engine_settings("llm", {"sequenceBatching": True, "sequenceMaxIdleMSec": 10})


def test_cpu_is_honoured_and_unseen_gpu_ids_refuse_to_load(monkeypatch):
    torch = pytest.importorskip("torch")
    assert pick_device({"deviceType": "cpu"}, 3) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match=r"GPU\(s\) \[99\].*sees 0 GPU"):
        pick_device({"deviceIds": [99]}, 0)
    with pytest.raises(ModelLoadError, match="deviceType gpu"):
        pick_device({"deviceType": "gpu"}, 0)
    assert pick_device({}, 0) == "cpu"
    # round-robin over the listed ids among the visible GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert [pick_device({"deviceIds": [1, 3]}, i) for i in range(3)] == \
        ["cuda:1", "cuda:3", "cuda:1"]
    assert chosen == [1, 3, 1]
    with pytest.raises(ModelLoadError, match=r"\[4\]"):
        pick_device({"deviceIds": [0, 4]}, 0)


def _archive(tmp_path, requirements: str | None) -> ModelArchive:
    model = {"modelName": "m"}
    if requirements is not None:
        (tmp_path / "requirements.txt").write_text(requirements)
        model["requirementsFile"] = "requirements.txt"
    return ModelArchive(model_dir=tmp_path, manifest={"model": model})


def test_requirements_are_off_by_default_and_refused_for_remote_models(tmp_path):
    archive = _archive(tmp_path, "nothing-to-install\n")
    off = SimpleNamespace(install_py_dep_per_model=False, install_py_dep_for_remote_models=False)
    assert asyncio.run(model_environment(archive, "m.mar", off, tmp_path / "ws")) is None
    on = SimpleNamespace(install_py_dep_per_model=True, install_py_dep_for_remote_models=False)
    with pytest.raises(Forbidden, match="remote URL"):
        asyncio.run(model_environment(archive, "https://example.com/m.mar", on, tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert asyncio.run(model_environment(_archive(plain, None), "m.mar", on, tmp_path)) is None
    assert env_key(b"a==1\n") == env_key(b"a==1\n") != env_key(b"a==2\n")
    assert not (tmp_path / "ws").exists()


def test_sequence_keys_are_read():
    options = model_settings(ServerConfig(), {
        "sequenceBatching": True, "maxNumSequence": 4, "sequenceMaxIdleMSec": 10,
        "sequenceTimeoutMSec": 60000, "maxSequenceJobQueueSize": 0}, {}).options
    assert (options.sequence_batching, options.max_num_sequence, options.sequence_max_idle_ms,
            options.sequence_timeout_ms, options.max_sequence_job_queue_size) == (
        True, 4, 10, 60000, 1)  # maxSequenceJobQueueSize is at least 1, as in TorchServe

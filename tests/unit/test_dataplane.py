"""The data plane's protocol-neutral operations, against stand-ins for the registry and manager."""

from __future__ import annotations

import asyncio

import pytest

from tsf import __version__
from tsf.auth import Tokens
from tsf.config.settings import ServerConfig
from tsf.dataplane import (DRAINING, DataPlane, derive_request_id, describe_models, list_models,
                           server_metadata)
from tsf.errors import Forbidden, ModelNotFound, Unauthorized
from tsf.serving.lifecycle import Lifecycle
from tsf.serving.traffic import TrafficSplit
from tsf.workers.messages import Answer


class _Version:
    def __init__(self, name: str, version: str, ready: bool = True) -> None:
        self.name, self.version, self.ready = name, version, ready
        self.url = f"{name}-{version}.mar"

    def describe(self) -> dict:
        return {"modelName": self.name, "modelVersion": self.version}

    def signature(self) -> dict:
        return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "y", "shape": [-1]}, {"no": "name"}]}


class _Registry:
    def __init__(self, versions: dict[str, list[_Version]],
                 splits: dict[str, TrafficSplit] | None = None) -> None:
        self._versions = versions
        self._splits = splits or {}

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[_Version]:
        return self._versions[name]

    def get(self, name: str, version: str | None = None) -> _Version:
        if name not in self._versions:
            raise ModelNotFound(f"Model not found: {name}")
        found = self._versions[name]
        return found[-1] if version is None else next(v for v in found if v.version == version)

    def split(self, name: str) -> TrafficSplit | None:
        return self._splits.get(name)


class _Job:
    def __init__(self, answer: Answer) -> None:
        self.future = asyncio.get_running_loop().create_future()
        self.future.set_result(answer)


class _Manager:
    def __init__(self, registry: _Registry, healthy: bool = True,
                 answer: Answer = Answer(200, "text/plain")) -> None:
        self.registry = registry
        self.healthy = healthy
        self.answer = answer
        self.submitted: list[tuple] = []

    def health(self) -> tuple[bool, list[str]]:
        return (True, []) if self.healthy else (False, ["model m is Loading"])

    def submit(self, name, version, request, span=None, workflow=None):
        self.submitted.append((name, version, request))
        return self.registry.get(name, version), _Job(self.answer)


def _plane(registry: _Registry | None = None, config: ServerConfig | None = None,
           tokens: Tokens | None = None, lifecycle: Lifecycle | None = None,
           **manager: object) -> DataPlane:
    registry = registry or _Registry({"m": [_Version("m", "1.0"), _Version("m", "2.0")]})
    return DataPlane(config or ServerConfig(), _Manager(registry, **manager), tokens or Tokens(),
                     lifecycle)


def test_request_id_is_the_header_then_the_protocol_id_then_a_new_one():
    assert derive_request_id("from-header", "from-body") == "from-header"
    assert derive_request_id(None, "from-body") == "from-body"
    fresh = {derive_request_id(None), derive_request_id("", ""), derive_request_id(None)}
    assert len(fresh) == 3 and all(len(i) == 32 for i in fresh)


def test_server_metadata_names_tsf_and_the_binary_extension():
    assert server_metadata() == {"name": "tsf", "version": __version__,
                                 "extensions": ["binary_tensor_data"]}


def test_list_models_pages_at_most_a_hundred():
    registry = _Registry({f"m{i:03d}": [_Version(f"m{i:03d}", "1")] for i in range(150)})
    first = list_models(registry, 0, 0)  # 0 (or anything over 100) asks for the maximum
    assert len(first["models"]) == 100 and first["nextPageToken"] == "100"
    assert first["models"][0] == {"modelName": "m000", "modelUrl": "m000-1.mar"}
    last = list_models(registry, 500, 100)
    assert len(last["models"]) == 50 and "nextPageToken" not in last
    assert list_models(registry, 10, -5)["models"][0]["modelName"] == "m000"


def test_describe_models_gives_every_version_with_the_traffic_split():
    registry = _Registry({"m": [_Version("m", "1.0"), _Version("m", "2.0")]},
                         {"m": TrafficSplit({"1.0": 1, "2.0": 3})})
    described = describe_models(registry, "m", "all")
    assert [d["modelVersion"] for d in described] == ["1.0", "2.0"]
    assert all(d["trafficSplit"] == {"1.0": 25.0, "2.0": 75.0} for d in described)
    assert describe_models(registry, "m", "1.0") == [
        {"modelName": "m", "modelVersion": "1.0", "trafficSplit": {"1.0": 25.0, "2.0": 75.0}}]


def test_describe_customized_asks_the_worker_once():
    plane = _plane(answer=Answer(200, "text/plain", b"handler says hi"))

    async def describe() -> list[dict]:
        return await plane.describe_models("m", "1.0", customized=True)

    described = asyncio.run(describe())
    assert described[0]["customizedMetadata"] == "handler says hi"
    (name, version, request), = plane.manager.submitted
    assert (name, version, request.kind, request.parts) == ("m", "1.0", "describe", [])
    assert asyncio.run(plane.describe_models("m", None)) == [
        {"modelName": "m", "modelVersion": "2.0"}]
    assert len(plane.manager.submitted) == 1  # not customized: no worker asked


def test_model_metadata_and_readiness():
    registry = _Registry({"m": [_Version("m", "1.0", ready=False), _Version("m", "2.0")]})
    plane = _plane(registry)
    assert plane.model_metadata("m", None) == {
        "name": "m", "versions": ["1.0", "2.0"], "platform": "pytorch",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]}
    assert plane.model_ready("m", None) and not plane.model_ready("m", "1.0")
    with pytest.raises(ModelNotFound):
        plane.model_ready("nope", None)


def test_ready_fails_while_draining_or_unhealthy():
    lifecycle = Lifecycle()
    plane = _plane(lifecycle=lifecycle)
    assert plane.ready() == (True, []) and not plane.draining
    lifecycle.start_draining()
    assert plane.draining and plane.ready() == (False, [DRAINING])
    assert _plane(healthy=False).ready() == (False, ["model m is Loading"])
    assert not _plane().draining  # no lifecycle: never draining


def test_the_model_api_switch_refuses_with_403():
    _plane().check_model_api()
    with pytest.raises(Forbidden) as refused:
        _plane(config=ServerConfig(enable_model_api=False)).check_model_api()
    assert "enable_model_api" in refused.value.message


def test_token_checks_follow_the_api():
    open_plane = _plane()
    assert not open_plane.tokens_enabled
    open_plane.check_token("inference", None)
    plane = _plane(tokens=Tokens(management=b"m-key"))
    assert plane.tokens_enabled
    plane.check_token("inference", None)  # that API has no token
    plane.check_token("management", "Bearer m-key")
    with pytest.raises(Unauthorized):
        plane.check_token("management", "Bearer wrong")


def test_submit_is_the_managers_own():
    plane = _plane()
    assert plane.submit == plane.manager.submit

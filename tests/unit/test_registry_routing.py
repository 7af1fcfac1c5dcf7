"""Registry.route: the one place a request without a version is given one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tsf.errors import ModelNotFound, ModelVersionNotFound
from tsf.serving.registry import Registry
from tsf.serving.traffic import TrafficSplit


def registry(*versions: str) -> Registry:
    reg = Registry()
    for version in versions:
        reg.add(SimpleNamespace(name="m", version=version))  # type: ignore[arg-type]
    return reg


def test_without_a_split_the_default_serves_and_a_named_version_is_kept():
    reg = registry("1.0", "2.0")
    assert reg.route("m", None, "key").version == "1.0"
    assert reg.route("m", "2.0").version == "2.0"
    with pytest.raises(ModelVersionNotFound):
        reg.route("m", "3.0")
    with pytest.raises(ModelNotFound):
        reg.route("other", None)


def test_a_split_routes_unversioned_requests_only():
    reg = registry("1.0", "2.0")
    reg.set_split("m", TrafficSplit({"2.0": 1}))
    assert {reg.route("m", None).version for _ in range(50)} == {"2.0"}
    assert reg.route("m", "1.0").version == "1.0"
    assert reg.get("m").version == "1.0"  # describe and readiness still mean the default


def test_removing_versions_renormalises_keeps_the_last_one_and_then_drops_the_split():
    reg = registry("1.0", "2.0", "3.0", "4.0")
    reg.set_split("m", TrafficSplit({"2.0": 1, "3.0": 1, "4.0": 2}))
    reg.remove("m", "4.0")
    assert reg.split("m").percentages() == {"2.0": 50.0, "3.0": 50.0}
    reg.remove("m", "3.0")
    assert reg.split("m").percentages() == {"2.0": 100.0}
    assert reg.route("m", None).version == "2.0"  # not the default 1.0
    reg.remove("m", "2.0")
    assert reg.split("m") is None and reg.route("m", None).version == "1.0"


def test_a_replaced_version_is_swapped_in_place():
    reg = registry("1.0")
    new = SimpleNamespace(name="m", version="1.0")
    old = reg.replace(new)  # type: ignore[arg-type]
    assert old is not new and reg.get("m", "1.0") is new and reg.get_exact("m", "1.0") is new

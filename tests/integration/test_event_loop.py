"""The ``event_loop`` setting picks the front end's loop, and the server logs the one it runs."""

from __future__ import annotations

import importlib.util

import pytest

from tsf.cli import event_loop_factory
from tsf.errors import BadRequest
from tsf.testing import ServerProcess

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def _served_loop(config: dict | None = None, env: dict | None = None) -> str:
    server = ServerProcess(config=config, env=env)
    try:
        assert server.get("/ping").status_code == 200
        lines = [line for line in server.log().splitlines() if "event loop: " in line]
        assert len(lines) == 1, server.log()
        return lines[0].rsplit("event loop: ", 1)[1].strip()
    finally:
        server.stop()


def test_asyncio_setting_runs_asyncio_loop():
    assert _served_loop(config={"event_loop": "asyncio"}) == "asyncio"


def test_auto_runs_uvloop_when_installed():
    assert _served_loop() == ("uvloop" if HAS_UVLOOP else "asyncio")


def test_environment_variable_overrides_default():
    assert _served_loop(env={"TSF_EVENT_LOOP": "asyncio"}) == "asyncio"


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed")
def test_uvloop_setting_runs_uvloop():
    assert _served_loop(config={"event_loop": "uvloop"}) == "uvloop"


@pytest.mark.skipif(HAS_UVLOOP, reason="uvloop is installed")
def test_uvloop_setting_without_uvloop_refuses_to_start():
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        ServerProcess(config={"event_loop": "uvloop"})


def test_unknown_loop_is_refused():
    with pytest.raises(BadRequest, match="event_loop"):
        event_loop_factory("trio")

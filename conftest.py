"""Suite-wide test marking: any test that starts a real server or worker processes is `slow`.

`pytest -m "not slow"` is then the fast loop (pure logic and in-process handler tests), however
each test file was written: a test is slow when it uses a server-starting fixture, or when its
module starts servers itself (``ServerProcess(``, ``subprocess.Popen(``).
"""

from __future__ import annotations

import pytest

SERVER_FIXTURES = {"tsf_server", "served", "protocol_server", "model_store"}
SERVER_STARTERS = ("ServerProcess(", "subprocess.Popen(")


def _starts_servers(module: object, cache: dict) -> bool:
    path = getattr(module, "__file__", None)
    if path not in cache:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, TypeError):
            text = ""
        cache[path] = any(marker in text for marker in SERVER_STARTERS)
    return cache[path]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cache: dict = {}
    for item in items:
        if "slow" in item.keywords:
            continue
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or \
                _starts_servers(getattr(item, "module", None), cache):
            item.add_marker(pytest.mark.slow)

"""The model store poll: which entries are watched, and a change is acted on once settled."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

from tsf.serving.manager_types import ManagerResult, RegisterRequest
from tsf.serving.store_watch import ModelStoreWatcher, signature, store_path


def test_only_model_store_names_are_watched(tmp_path):
    assert store_path("m.mar", str(tmp_path)) == tmp_path / "m.mar"
    for url in ("https://host/m.mar", "file:///tmp/m.mar", "/abs/m.mar", "../m.mar"):
        assert store_path(url, str(tmp_path)) is None
    assert store_path("m.mar", "") is None


def test_a_folder_changes_when_any_file_in_it_does(tmp_path):
    (tmp_path / "a").write_text("1")
    before = signature(tmp_path)
    (tmp_path / "b").write_text("22")
    assert signature(tmp_path) != before
    assert signature(tmp_path / "missing") is None


class FakeManager:
    def __init__(self, url: str) -> None:
        self.registry = [SimpleNamespace(name="m", url=url)]
        self.registered: list[tuple] = []

    async def register(self, request):
        self.registered.append(request)
        return ManagerResult(200, "updated")


def test_a_change_is_rolled_out_once_it_has_settled(tmp_path):
    archive = tmp_path / "m.mar"
    archive.write_bytes(b"one")
    manager = FakeManager("m.mar")
    watcher = ModelStoreWatcher(manager, str(tmp_path))

    async def polls(count: int) -> None:
        for _ in range(count):
            await watcher.poll()

    asyncio.run(polls(3))
    assert manager.registered == []  # unchanged
    archive.write_bytes(b"two, longer")
    os.utime(archive, ns=(1, 10**18))
    asyncio.run(polls(1))
    assert manager.registered == []  # changed, not yet settled
    asyncio.run(polls(3))
    assert manager.registered == [RegisterRequest("m.mar", model_name="m", replace=True)]

"""Opt-in model store poll (``model_store_poll_seconds`` > 0): a registered model's archive that
changes in the model store is rolled out in place (``register(..., replace=True)``).

Only models registered by a model store name are watched.  A change is acted on once the file
(or folder) has looked the same on two polls in a row, so a copy in progress is not picked up
half written.  A failed update is logged and retried only when the file changes again.  An
archive whose manifest now names another version is registered as that version, beside the
old one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import TsfError
from .manager_types import RegisterRequest

log = logging.getLogger("tsf.store_watch")

Signature = tuple[int, int]  # (newest modification time in ns, total size in bytes)


def signature(path: Path) -> Signature | None:
    """What changes when the archive at ``path`` changes (a folder: any file in it)."""
    try:
        if path.is_dir():
            newest, size = 0, 0
            for root, _, files in os.walk(path):
                for name in files:
                    stat = os.stat(os.path.join(root, name))
                    newest, size = max(newest, stat.st_mtime_ns), size + stat.st_size
            return newest, size
        stat = path.stat()
        return stat.st_mtime_ns, stat.st_size
    except OSError:
        return None


def store_path(url: str, model_store: str) -> Path | None:
    """The model store entry a model was registered from, or None (a URL from elsewhere)."""
    if not model_store or urlsplit(url).scheme or Path(url).is_absolute() or \
            ".." in Path(url).parts:
        return None
    return Path(model_store) / url


class ModelStoreWatcher:
    """Notices changed archives of registered models and rolls them out."""

    def __init__(self, manager: Any, model_store: str) -> None:
        self.manager = manager
        self.model_store = model_store
        self._seen: dict[tuple[str, str], Signature | None] = {}  # what is serving
        self._pending: dict[tuple[str, str], Signature | None] = {}  # changed, settling

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll()
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("model store poll failed")

    async def poll(self) -> None:
        watched = {}
        for mv in list(self.manager.registry):
            path = store_path(mv.url, self.model_store)
            if path is not None:
                watched[(mv.name, mv.url)] = path
        for key in set(self._seen) - set(watched):
            self._seen.pop(key, None)
            self._pending.pop(key, None)
        for key, path in watched.items():
            now = await asyncio.to_thread(signature, path)
            if key not in self._seen:
                self._seen[key] = now
                continue
            if now == self._seen[key] or now is None:
                self._pending.pop(key, None)
                continue
            if self._pending.get(key) != now:
                self._pending[key] = now  # changed: act once it stops changing
                continue
            del self._pending[key]
            self._seen[key] = now
            await self._update(*key)

    async def _update(self, name: str, url: str) -> None:
        log.info("model store entry %s of model %s changed; rolling it out", url, name)
        try:
            result = await self.manager.register(RegisterRequest(url, model_name=name,
                                                                 replace=True))
            log.info("%s", result.message)
        except TsfError as exc:
            log.error("updating model %s from the changed %s failed; the old archive keeps "
                      "serving: %s", name, url, exc.message)

"""Config snapshots on disk: the registered models written after each management change, and
the latest one read back at start.

A snapshot is a config.properties file, as TorchServe writes it: the keys of the config file the
server was started with, ``tsConfigFile`` (that file's path) and ``model_snapshot`` (the JSON of
:func:`tsf.serving.snapshot.capture`).  It is named ``yyyyMMddHHmmssSSS-snapshot.cfg`` (local
time) in ``snapshot_dir`` (default ``{workspace}/config``), so ``tsf serve --ts-config`` (or
TorchServe) can start from any of them.  Each is written to a temporary file, flushed to disk
and renamed into place, so a crash (even ``kill -9``) leaves the previous snapshot or the new
one, never a part of one.  The newest ``snapshot_keep`` are kept.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.properties import format_properties, read_properties

log = logging.getLogger("tsf.snapshot")

NAME = re.compile(r"^(\d{17})-(\w+)\.cfg$")
CONFIG_FILE_KEY = "tsConfigFile"  # TorchServe's: the config file the server started with


@dataclass(frozen=True)
class Snapshot:
    """A snapshot file read back: its path and keys."""

    path: Path
    values: dict[str, str]

    @property
    def config_file(self) -> str:
        return self.values.get(CONFIG_FILE_KEY, "")

    @property
    def model_snapshot(self) -> str:
        return self.values.get("model_snapshot", "")


def snapshot_folder(config: Any) -> Path | None:
    """Where snapshots go: ``snapshot_dir``, else ``{workspace}/config``; None when neither is
    set (a temporary workspace does not outlive the server) or snapshots are off."""
    if config.no_config_snapshots or config.sagemaker or config.snapshot_keep <= 0:
        return None
    if config.snapshot_dir:
        return Path(config.snapshot_dir)
    return Path(config.workspace) / "config" if config.workspace else None


class SnapshotStore:
    """Writes snapshots in one folder, in order, and finds the latest."""

    def __init__(self, folder: Path, keep: int, config_file: str,
                 config_values: dict[str, str]) -> None:
        self.folder = folder
        self.keep = keep
        self.config_file = config_file
        self.config_values = config_values  # the config file's keys, copied into each snapshot
        self._lock = asyncio.Lock()
        self._last_stamp = ""

    def _name(self) -> str:
        now = datetime.datetime.now()
        stamp = now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"
        while stamp <= self._last_stamp or (self.folder / f"{stamp}-snapshot.cfg").exists():
            stamp = str(int(stamp) + 1)  # names stay in the order they were written
        self._last_stamp = stamp
        return f"{stamp}-snapshot.cfg"

    async def save(self, document: dict) -> Path:
        """Write ``document`` (a model_snapshot) as the newest snapshot; returns its path."""
        import json

        async with self._lock:
            name = self._name()
            document = {"name": name, **document}
            values = {k: v for k, v in self.config_values.items()
                      if k not in ("model_snapshot", CONFIG_FILE_KEY)}
            values[CONFIG_FILE_KEY] = self.config_file
            values["model_snapshot"] = json.dumps(document, separators=(",", ":"))
            text = format_properties(values, comments=("Saving snapshot",
                                                       datetime.datetime.now().ctime()))
            return await asyncio.to_thread(self._write, name, text)

    def _write(self, name: str, text: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / name
        temporary = self.folder / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_folder(self.folder)
        self._prune()
        return final

    def _prune(self) -> None:
        names = sorted(p.name for p in self.folder.iterdir() if NAME.match(p.name))
        for name in names[:max(0, len(names) - self.keep)]:
            (self.folder / name).unlink(missing_ok=True)

    def latest(self) -> Snapshot | None:
        """The newest snapshot that reads, or None (a file that does not read is skipped with a
        warning; temporary files are never read)."""
        if not self.folder.is_dir():
            return None
        names = sorted((p.name for p in self.folder.iterdir() if NAME.match(p.name)),
                       reverse=True)
        for name in names:
            path = self.folder / name
            try:
                values = read_properties(path)
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("config snapshot %s cannot be read (%s); trying an older one", path,
                            exc)
                continue
            if "model_snapshot" in values:
                return Snapshot(path, values)
            log.warning("config snapshot %s has no model_snapshot; trying an older one", path)
        return None


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not POSIX
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)

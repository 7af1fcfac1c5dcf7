"""TorchServe's ``model_snapshot``: the startup models a config.properties lists.

KServe's TorchServe layout (``/mnt/models/config/config.properties``) names its models this way::

    model_snapshot={"name":"startup.cfg","modelCount":1,"models":{"mnist":{"1.0":{
        "defaultVersion":true,"marName":"mnist.mar","minWorkers":1,"maxWorkers":5,
        "batchSize":1,"maxBatchDelay":10,"responseTimeout":120}}}}

Each model version becomes one registration of ``marName`` from the model store with its
workers and batch settings; the version marked ``defaultVersion`` becomes the default.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest, TsfError
from .manager_types import RegisterRequest

log = logging.getLogger("tsf")

# snapshot key -> RegisterRequest field
_SETTINGS = {"minWorkers": "initial_workers", "maxWorkers": "max_workers",
             "batchSize": "batch_size",
             "maxBatchDelay": "max_batch_delay", "responseTimeout": "response_timeout",
             "startupTimeout": "startup_timeout"}


@dataclass
class SnapshotModel:
    """One model version of a snapshot, ready to register."""

    name: str
    version: str
    mar_name: str
    default: bool = False
    settings: dict = field(default_factory=dict)

    def request(self) -> RegisterRequest:
        """The registration of this version; a setting that is not a whole number is a
        BadRequest."""
        settings = {}
        for keyword, value in self.settings.items():
            try:
                settings[keyword] = int(value)
            except ValueError:
                raise BadRequest(f"{keyword} must be an integer, got {value!r}") from None
        return RegisterRequest(self.mar_name, model_name=self.name, synchronous=False,
                               **settings)


def parse_snapshot(text: str) -> list[SnapshotModel]:
    """The model versions a ``model_snapshot`` value lists (``[]`` for an empty value).

    Raises BadRequest naming the first thing that is wrong, so a bad config stops the server at
    start with a precise message instead of serving without its models.
    """
    if not text.strip():
        return []
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"model_snapshot is not valid JSON: {exc}") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict):
        raise BadRequest('model_snapshot must be an object with a "models" object')
    out = []
    for name, versions in models.items():
        if not isinstance(versions, dict) or not versions:
            raise BadRequest(f"model_snapshot: model {name!r} must map versions to settings")
        for version, entry in versions.items():
            where = f"model_snapshot: model {name!r} version {version!r}"
            if not isinstance(entry, dict):
                raise BadRequest(f"{where} must be an object")
            mar_name = entry.get("marName")
            if not isinstance(mar_name, str) or not mar_name:
                raise BadRequest(f"{where} has no marName")
            settings = {}
            for key, keyword in _SETTINGS.items():
                if entry.get(key) is not None:
                    value = entry[key]
                    if isinstance(value, bool) or not isinstance(value, (int, str)):
                        raise BadRequest(f"{where}: {key} must be an integer, got {value!r}")
                    settings[keyword] = value
            out.append(SnapshotModel(name=name, version=str(version), mar_name=mar_name,
                                     default=entry.get("defaultVersion") is True,
                                     settings=settings))
    return out


async def register_snapshot_models(manager: Any, config: Any) -> None:
    """Register every model version of ``config.model_snapshot`` (workers load in the background).

    A model that cannot be registered is logged and skipped, as ``--models`` entries are.
    """
    for entry in parse_snapshot(config.model_snapshot):
        try:
            await manager.register(entry.request(), loaded_at_startup=True)
        except TsfError as exc:
            log.error("snapshot model %s version %s (%s) not registered: %s", entry.name,
                      entry.version, entry.mar_name, exc.message)
            continue
        registered = {mv.version for mv in manager.registry.versions(entry.name)}
        if entry.version not in registered:
            log.warning("snapshot model %s: %s holds version(s) %s, not %s; the archive's "
                        "version is served", entry.name, entry.mar_name,
                        ", ".join(sorted(registered)), entry.version)
        elif entry.default:
            manager.set_default(entry.name, entry.version)

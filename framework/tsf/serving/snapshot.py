"""TorchServe's ``model_snapshot``: the startup models a config.properties lists.

KServe's TorchServe layout (``/mnt/models/config/config.properties``) names its models this way::

    model_snapshot={"name":"startup.cfg","modelCount":1,"models":{"mnist":{"1.0":{
        "defaultVersion":true,"marName":"mnist.mar","minWorkers":1,"maxWorkers":5,
        "batchSize":1,"maxBatchDelay":10,"responseTimeout":120}}}}

Each model version becomes one registration of ``marName`` from the model store with its
workers and batch settings; the version marked ``defaultVersion`` becomes the default.  tsf's
own snapshots (:mod:`tsf.serving.snapshot_store`, written by :func:`capture`) add what TorchServe's
lack and ignores: each version's ``modelUrl`` (registered from there rather than from
``marName``) and ``handler``, and the models' ``trafficSplits``.  ``runtimeType`` must be
``python``; ``parallelLevel`` above 1 is refused, as in model-config.yaml.
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
    url: str | None = None      # tsf's modelUrl: where it was registered from
    handler: str | None = None  # tsf's: the handler it was registered with

    def request(self) -> RegisterRequest:
        """The registration of this version; a setting that is not a whole number is a
        BadRequest."""
        settings = {}
        for keyword, value in self.settings.items():
            try:
                settings[keyword] = int(value)
            except ValueError:
                raise BadRequest(f"{keyword} must be an integer, got {value!r}") from None
        return RegisterRequest(self.url or self.mar_name, model_name=self.name,
                               handler=self.handler, synchronous=False, **settings)


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
            if str(entry.get("runtimeType", "python")).lower() not in ("python", "python3"):
                raise BadRequest(f"{where}: runtimeType {entry['runtimeType']!r} is not "
                                 "supported (python only)")
            if entry.get("parallelLevel") not in (None, 0, 1):
                raise BadRequest(f"{where}: parallelLevel {entry['parallelLevel']!r} is not "
                                 "supported (no tensor or pipeline parallelism)")
            out.append(SnapshotModel(name=name, version=str(version), mar_name=mar_name,
                                     default=entry.get("defaultVersion") is True,
                                     settings=settings, url=_text(entry.get("modelUrl")),
                                     handler=_text(entry.get("handler"))))
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def traffic_splits(text: str) -> dict[str, dict[str, float]]:
    """tsf's ``trafficSplits`` of a snapshot (``{}`` when it has none)."""
    if not text.strip():
        return {}
    splits = json.loads(text).get("trafficSplits")
    return splits if isinstance(splits, dict) else {}


def capture(manager: Any) -> dict:
    """The registered models as a ``model_snapshot`` document (workflow models left out, as in
    TorchServe), with tsf's additions."""
    import time
    from pathlib import PurePosixPath
    from urllib.parse import unquote, urlsplit

    models: dict[str, dict[str, dict]] = {}
    registry, count = manager.registry, 0
    for mv in registry:
        if mv.name in manager.owners:
            continue
        s = mv.settings
        models.setdefault(mv.name, {})[mv.version] = {
            "defaultVersion": registry.default_version(mv.name) == mv.version,
            "marName": PurePosixPath(unquote(urlsplit(mv.url).path)).name or mv.url,
            "minWorkers": s.min_workers, "maxWorkers": max(s.max_workers, s.min_workers),
            "batchSize": s.batch_size, "maxBatchDelay": s.max_batch_delay,
            "responseTimeout": s.response_timeout, "startupTimeout": s.startup_timeout,
            "runtimeType": "python", "modelUrl": mv.url,
            "handler": mv.archive.handler or None}
        count += 1
    splits = {name: registry.split(name).weights for name in models
              if registry.split(name) is not None}
    return {"modelCount": count, "created": int(time.time() * 1000), "models": models,
            "trafficSplits": splits}


async def register_snapshot_models(manager: Any, text: str) -> None:
    """Register every model version of a ``model_snapshot`` (workers load in the background),
    then its defaults and traffic splits.

    A model that cannot be registered is logged and skipped, as ``--models`` entries are.
    """
    for entry in parse_snapshot(text):
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
    for name, weights in traffic_splits(text).items():
        try:
            manager.set_traffic(name, weights)
        except TsfError as exc:
            log.error("snapshot traffic split of %s not restored: %s", name, exc.message)

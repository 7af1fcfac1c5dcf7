"""Registered models: name -> version -> ModelVersion, each model's default version and its
traffic split (see :mod:`tsf.serving.traffic`)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..archives.reader import ModelArchive
from ..batching.batcher import Batcher
from ..batching.queue import BatchQueue
from ..config.settings import ModelSettings
from ..errors import Forbidden, ModelNotFound, ModelVersionNotFound
from ..workers.pool import WorkerPool
from .traffic import TrafficSplit


@dataclass
class ModelVersion:
    """One registered version of a model and the machinery that serves it."""

    name: str
    version: str
    url: str
    archive: ModelArchive
    settings: ModelSettings
    pool: WorkerPool
    queue: BatchQueue
    batcher: Batcher  # or a SequenceBatcher (sequenceBatching), an EngineLane (engine models)
    loaded_at_startup: bool = False
    owned_dir: Path | None = None
    autoscaler: Any = None  # tsf.serving.autoscale.Autoscaler, when min_workers < max_workers
    registered_at: float = field(default_factory=time.time)

    @property
    def engine(self) -> dict | None:
        """How a model served by a generation engine runs (None for any other model)."""
        return self.pool.spec.get("engine")

    def describe(self) -> dict:
        """The model object of TorchServe's describe response."""
        described = self._describe()
        sequences = getattr(self.batcher, "settings", None)  # a SequenceBatcher's
        if sequences is not None:
            described.update(stateful=True, maxNumSequence=sequences.max_sequences,
                             maxSequenceJobQueueSize=sequences.max_queued,
                             sequenceMaxIdleMSec=int(sequences.max_idle_s * 1000),
                             sequenceTimeoutMSec=int(sequences.timeout_s * 1000),
                             openSequences=len(self.batcher.sequences))
        if self.engine is not None:  # a generation engine: continuous batching
            described.update(engine=self.engine["engine"], continuousBatching=True,
                             asyncCommunication=True,
                             maxNumSequence=self.engine["max_sequences"],
                             runningSequences=getattr(self.batcher, "running", 0))
        return described

    def _describe(self) -> dict:
        return {
            "modelName": self.name,
            "modelVersion": self.version,
            "modelUrl": self.url,
            "runtime": self.archive.manifest.get("runtime", "python"),
            "minWorkers": self.settings.min_workers,
            "maxWorkers": max(self.settings.max_workers, self.settings.min_workers),
            "targetWorkers": self.pool.target,
            "batchSize": self.settings.batch_size,
            "maxBatchDelay": self.settings.max_batch_delay,
            "responseTimeout": self.settings.response_timeout,
            "startupTimeout": self.settings.startup_timeout,
            "loadedAtStartup": self.loaded_at_startup,
            "handler": self.archive.handler or "base",
            "queueLength": len(self.queue),
            "jobQueueSize": self.queue.maxsize,
            "workers": self.pool.describe(),
        }

    @property
    def ready(self) -> bool:
        """At least one worker serving (KServe's model readiness; see :mod:`tsf.serving.health`)."""
        return self.pool.serving_count > 0

    def signature(self) -> dict:
        """Inputs and outputs for OIP metadata: model-config's ``signature``, else the handler's."""
        declared = self.archive.model_config.get("signature")
        if isinstance(declared, dict):
            return declared
        for worker in self.pool.workers.values():
            if worker.signature:
                return worker.signature
        return {}

    def remove_files(self) -> None:
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)


class Registry:
    """Lookup of model versions; resolves a missing version to the model's default."""

    def __init__(self) -> None:
        self._models: dict[str, dict[str, ModelVersion]] = {}
        self._defaults: dict[str, str] = {}
        self._splits: dict[str, TrafficSplit] = {}

    def __iter__(self) -> Iterator[ModelVersion]:
        for versions in self._models.values():
            yield from versions.values()

    def names(self) -> list[str]:
        return sorted(self._models)

    def exists(self, name: str, version: str) -> bool:
        return version in self._models.get(name, {})

    def get_exact(self, name: str, version: str) -> ModelVersion | None:
        """The registered ``version`` of ``name``, or None (no default, no split)."""
        return self._models.get(name, {}).get(version)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"Model not found: {name}")
        if version is None:
            return versions[self._defaults[name]]
        try:
            return versions[version]
        except KeyError:
            raise ModelVersionNotFound(
                f"Model version: {version} does not exist for model: {name}") from None

    def route(self, name: str, version: str | None, routing_key: str | None = None
              ) -> ModelVersion:
        """The version that serves a request: the one named, else by the model's traffic split
        (sticky by ``routing_key``), else the default.  The one place a missing version is
        resolved for requests."""
        split = self._splits.get(name)
        if version is None and split is not None:
            version = split.choose(routing_key)
        return self.get(name, version)

    def split(self, name: str) -> TrafficSplit | None:
        self.get(name)
        return self._splits.get(name)

    def set_split(self, name: str, split: TrafficSplit | None) -> None:
        self.get(name)
        if split is None:
            self._splits.pop(name, None)
        else:
            self._splits[name] = split

    def replace(self, mv: ModelVersion) -> ModelVersion:
        """Put ``mv`` in place of the registered version of the same name and version; the
        version it replaces is returned (a rolling update)."""
        old = self.get(mv.name, mv.version)
        self._models[mv.name][mv.version] = mv
        return old

    def versions(self, name: str) -> list[ModelVersion]:
        if name not in self._models:
            raise ModelNotFound(f"Model not found: {name}")
        return list(self._models[name].values())

    def default_version(self, name: str) -> str:
        self.get(name)
        return self._defaults[name]

    def add(self, mv: ModelVersion) -> None:
        versions = self._models.setdefault(mv.name, {})
        versions[mv.version] = mv
        self._defaults.setdefault(mv.name, mv.version)

    def check_removable(self, name: str, version: str) -> None:
        if version == self._defaults.get(name) and len(self._models.get(name, {})) > 1:
            raise Forbidden(f"Cannot remove default version for model {name}; set another "
                            "version as default first")

    def remove(self, name: str, version: str) -> ModelVersion:
        mv = self.get(name, version)
        versions = self._models[name]
        del versions[version]
        if not versions:
            del self._models[name]
            del self._defaults[name]
        split = self._splits.pop(name, None)
        if split is not None and versions:
            rest = split.without(version)
            if rest is not None:
                self._splits[name] = rest
        return mv

    def set_default(self, name: str, version: str) -> None:
        self.get(name, version)
        self._defaults[name] = version

"""TorchServe's ``models`` key: per-model settings in config.properties, by name and version.

::

    models={\\
      "noop": {"1.0": {"defaultVersion": true, "marName": "noop.mar", "minWorkers": 1,\\
                       "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 100,\\
                       "responseTimeout": 120}}}

The outer key is the model's name (as registered), the inner one the archive's version.  The
entry applies whenever that version is registered (at start or through the API), with the
precedence TorchServe documents: the register request > the archive's model-config.yaml >
this key > the server's defaults.  ``defaultVersion: true`` makes that version the default.
As in TorchServe, a number <= 0 counts as not set, ``marName`` is not read (the key never
loads a model: list it in ``load_models`` or register it), and ``runtimeType`` must be
``python``.  Anything else that is wrong stops the start with its reason.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..errors import BadRequest

log = logging.getLogger("tsf.config")

# the key's name -> tsf.config.settings.model_settings' name
SETTINGS = {"minWorkers": "min_workers", "maxWorkers": "max_workers", "batchSize": "batch_size",
            "maxBatchDelay": "max_batch_delay", "responseTimeout": "response_timeout",
            "startupTimeout": "startup_timeout"}
IGNORED = ("marName", "parallelLevel", "parallelType", "deviceType", "deviceIds")


class ModelEntries:
    """The parsed key: settings and default flag per (name, version)."""

    def __init__(self, entries: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.entries = entries or {}

    def settings(self, name: str, version: str) -> dict[str, int]:
        """The settings the key gives this version (model_settings' names)."""
        entry = self.entries.get((name, version), {})
        return {SETTINGS[k]: v for k, v in entry.items() if k in SETTINGS}

    def is_default(self, name: str, version: str) -> bool:
        return self.entries.get((name, version), {}).get("defaultVersion") is True


def parse_models(text: str) -> ModelEntries:
    """The ``models`` value; BadRequest names the first thing that is wrong."""
    if not text.strip():
        return ModelEntries()
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"models is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest('models must be a JSON object: {"name": {"version": {...}}}')
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for name, versions in document.items():
        if not isinstance(versions, dict):
            raise BadRequest(f"models: {name!r} must map versions to settings")
        for version, entry in versions.items():
            where = f"models: {name!r} version {version!r}"
            if not isinstance(entry, dict):
                raise BadRequest(f"{where} must be an object")
            entries[(name, str(version))] = _entry(entry, where)
    return ModelEntries(entries)


def _entry(entry: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key in SETTINGS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadRequest(f"{where}: {key} must be an integer, got {value!r:.60}")
            if value > 0:  # TorchServe: <= 0 means not set
                out[key] = value
        elif key == "defaultVersion":
            if not isinstance(value, bool):
                raise BadRequest(f"{where}: defaultVersion must be true or false")
            out[key] = value
        elif key == "runtimeType":
            if str(value).lower() not in ("python", "python3"):
                raise BadRequest(f"{where}: runtimeType {value!r} is not supported (python "
                                 "only)")
        elif key in IGNORED:
            log.info("%s: %s is not read from the models key (as in TorchServe)", where, key)
        else:
            log.warning("%s: unknown key %s ignored", where, key)
    return out

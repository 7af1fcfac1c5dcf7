"""Per-model Python requirements (TorchServe's ``--requirements-file`` with
``install_py_dep_per_model=true``), installed once per distinct requirements file.

The archive's requirements are installed with ``pip install --target`` into
``{workspace}/pyenvs/{hash}``, where the hash covers the file's bytes and the Python version, and
that folder goes first on the worker's ``sys.path``; everything the server's environment has
stays importable.  Off by default: with the setting off an archive's requirements file is not
installed (a warning says so).  Requirements of an archive fetched from a remote URL are refused
(403) unless ``install_py_dep_for_remote_models`` allows them: installing them runs code from
the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..archives.reader import ModelArchive, confined_path
from ..errors import Forbidden, InvalidArchive, ModelLoadError
from .spawn import run

log = logging.getLogger("tsf.requirements_env")

INSTALL_TIMEOUT = 600.0
_locks: dict[str, asyncio.Lock] = {}


def _remote(url: str) -> bool:
    return urlsplit(url).scheme not in ("", "file")


def requirements_file(archive: ModelArchive) -> Path | None:
    name = archive.model.get("requirementsFile")
    if not name:
        return None
    path = confined_path(archive.model_dir, str(name), "requirementsFile")
    if not path.is_file():
        raise InvalidArchive(f"requirements file {name!r} named in the manifest is not in the "
                             "archive")
    return path


def env_key(requirements: bytes) -> str:
    """The cache key of an environment: the requirements' bytes and this Python's version."""
    digest = hashlib.sha256(requirements)
    digest.update(sys.version.encode())
    return digest.hexdigest()[:32]


async def model_environment(archive: ModelArchive, url: str, config: Any,
                            workspace: Path) -> Path | None:
    """The folder holding the model's requirements (installed now if not cached), or None."""
    path = requirements_file(archive)
    if path is None:
        return None
    if not config.install_py_dep_per_model:
        log.warning("model %s has a requirements file that is not installed: the server's "
                    "install_py_dep_per_model setting is off", archive.model_name)
        return None
    if _remote(url) and not config.install_py_dep_for_remote_models:
        raise Forbidden(f"model {url!r} comes from a remote URL and has a requirements file; "
                        "installing it is refused unless install_py_dep_for_remote_models=true")
    key = env_key(path.read_bytes())
    envs = workspace / "pyenvs"
    target = envs / key
    lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        if target.is_dir():
            return target
        envs.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=envs))
        try:
            await _pip_install(path, staging, archive.model_dir)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("installed the requirements of %s into %s", archive.model_name, target)
    return target


async def _pip_install(requirements: Path, target: Path, cwd: Path) -> None:
    try:
        code, output = await run(
            [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
             "--no-warn-script-location", "--target", str(target), "-r", str(requirements)],
            INSTALL_TIMEOUT, cwd=str(cwd))
    except asyncio.TimeoutError:
        raise ModelLoadError(f"installing the model's requirements took more than "
                             f"{INSTALL_TIMEOUT:g} s") from None
    if code != 0:
        tail = output.strip().splitlines()[-5:]
        raise ModelLoadError("installing the model's requirements failed: " + " | ".join(tail))

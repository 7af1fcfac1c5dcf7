"""Writing model archives (``tsf archive``), compatible with torch-model-archiver.

The output holds the given files at its root and ``MAR-INF/MANIFEST.json`` with the same fields
torch-model-archiver writes, in one of its formats: ``default`` (.mar, deflated zip), ``zip-store``
(.mar, stored), ``tgz`` (.tar.gz with one top-level folder) or ``no-archive`` (a directory).
"""

from __future__ import annotations

import glob
import json
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import __version__
from ..errors import BadRequest
from .reader import MANIFEST_PATH, check_version

FORMATS = ("default", "tgz", "no-archive", "zip-store")


@dataclass
class ArchiveSpec:
    """What to put in an archive (mirrors torch-model-archiver's command-line flags)."""

    model_name: str
    version: str = "1.0"
    handler: str = ""
    serialized_file: str | None = None
    model_file: str | None = None
    extra_files: str | None = None
    requirements_file: str | None = None
    config_file: str | None = None
    export_path: str = "."
    archive_format: str = "default"
    force: bool = False
    runtime: str = "python"


def _split_handler(handler: str) -> tuple[str, str]:
    """``("path/h.py", "fn")`` for a file handler (function optional), ``("", "")`` for a name."""
    path, _, function = handler.partition(":")
    return (path, function) if path.endswith(".py") else ("", "")


def _manifest_handler(handler: str) -> str:
    path, function = _split_handler(handler)
    if not path:
        return handler
    return Path(path).name + (":" + function if function else "")


def build_manifest(spec: ArchiveSpec) -> dict:
    model: dict = {"modelName": spec.model_name}
    if spec.serialized_file:
        model["serializedFile"] = Path(spec.serialized_file).name
    model["handler"] = _manifest_handler(spec.handler)
    if spec.model_file:
        model["modelFile"] = Path(spec.model_file).name
    model["modelVersion"] = spec.version
    if spec.requirements_file:
        model["requirementsFile"] = Path(spec.requirements_file).name
    if spec.config_file:
        model["configFile"] = Path(spec.config_file).name
    return {
        "createdOn": datetime.now().strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": spec.runtime,
        "model": model,
        "archiverVersion": f"tsf-{__version__}",
    }


def _copy_extra(pattern: str, staging: Path) -> None:
    is_glob = any(ch in pattern for ch in "*?[")
    matches = glob.glob(pattern)
    if not matches and not is_glob:
        raise BadRequest(f"extra file does not exist: {pattern}")
    for match in matches:
        src = Path(match)
        if src.is_file():
            shutil.copy2(src, staging / src.name)
        elif src.is_dir():  # like torch-model-archiver: the folder's contents go to the root
            for item in src.iterdir():
                if item.is_dir():
                    shutil.copytree(item, staging / item.name, dirs_exist_ok=True)
                else:
                    shutil.copy2(item, staging / item.name)


def _stage(spec: ArchiveSpec, staging: Path) -> None:
    for path in (spec.serialized_file, spec.model_file, spec.requirements_file, spec.config_file,
                 _split_handler(spec.handler)[0]):
        if not path:
            continue
        if not Path(path).is_file():
            raise BadRequest(f"file does not exist: {path}")
        shutil.copy2(path, staging / Path(path).name)
    for pattern in (spec.extra_files or "").split(","):
        if pattern.strip():
            _copy_extra(pattern.strip(), staging)
    (staging / "MAR-INF").mkdir(exist_ok=True)
    (staging / MANIFEST_PATH).write_text(json.dumps(build_manifest(spec), indent=2))


def output_path(spec: ArchiveSpec) -> Path:
    suffix = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}
    return Path(spec.export_path) / (spec.model_name + suffix[spec.archive_format])


def write_archive(spec: ArchiveSpec) -> Path:
    """Create the archive described by ``spec`` and return its path."""
    if spec.archive_format not in FORMATS:
        raise BadRequest(f"archive format must be one of {', '.join(FORMATS)}")
    if not spec.model_name or "/" in spec.model_name:
        raise BadRequest("model name must be a non-empty name without '/'")
    check_version(spec.version, "--version (the manifest's modelVersion)")
    out = output_path(spec)
    if out.exists():
        if not spec.force:
            raise BadRequest(f"{out} already exists; use -f to overwrite")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tsf-archive-") as tmp:
        staging = Path(tmp) / spec.model_name
        staging.mkdir()
        _stage(spec, staging)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        if spec.archive_format == "no-archive":
            shutil.copytree(staging, out)
        elif spec.archive_format == "tgz":
            with tarfile.open(out, "w:gz") as tf:
                tf.add(staging, arcname=spec.model_name)
        else:
            mode = zipfile.ZIP_STORED if spec.archive_format == "zip-store" else \
                zipfile.ZIP_DEFLATED
            with zipfile.ZipFile(out, "w", mode) as zf:
                for path in files:
                    zf.write(path, path.relative_to(staging).as_posix())
    return out

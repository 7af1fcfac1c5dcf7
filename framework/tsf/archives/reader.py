"""Reading model archives: ``.mar`` (zip), ``.tar.gz`` and plain directories, extracted safely.

Extraction refuses entries that would land outside the target (``..``, absolute paths, drive
letters), links and special files, an archive holding one file name twice (which of the two
counts would be up to the reader), and archives whose entry count or unpacked size passes the
configured limits.  Sizes are counted while writing, so a zip whose headers lie is caught too.
A manifest's ``modelVersion`` must be a plain version (:data:`VERSION`): versions appear in
URLs, folder names and metrics labels.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import InvalidArchive, TsfError

MANIFEST_PATH = "MAR-INF/MANIFEST.json"
_CHUNK = 1 << 20
MAX_NAME_BYTES = 255  # NAME_MAX of common file systems
MAX_PATH_CHARS = 1024
MAX_METADATA_BYTES = 4 * 1024**2  # MANIFEST.json and model-config.yaml
# Manifest fields that name files in the model's folder; extraFiles is a comma-separated list.
PATH_FIELDS = ("serializedFile", "modelFile", "configFile", "requirementsFile", "extraFiles")
STRING_FIELDS = ("modelName", "modelVersion", "handler", "description", "runtime") + PATH_FIELDS
# 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit, without '..'
VERSION = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_version(version: str, where: str = "manifest field modelVersion") -> str:
    """``version`` if it is a plain version, else InvalidArchive naming ``where``."""
    if not VERSION.fullmatch(version):
        raise InvalidArchive(f"{where} is {version[:80]!r}: a version is 1 to 64 letters, "
                             "digits, '.', '_' or '-', starting with a letter or digit, "
                             "without '..' (such as 1.0, 2, v1 or 1.0.0-rc1)")
    return version


@dataclass
class Limits:
    """Bounds on what one archive may unpack to."""

    max_bytes: int = 4 * 1024**3
    max_files: int = 10000


@dataclass
class ModelArchive:
    """An unpacked archive: its directory, manifest and model-config.yaml contents."""

    model_dir: Path
    manifest: dict
    model_config: dict = field(default_factory=dict)

    @property
    def model(self) -> dict:
        return self.manifest.setdefault("model", {})

    @property
    def model_name(self) -> str:
        return str(self.model.get("modelName", ""))

    @property
    def model_version(self) -> str:
        return str(self.model.get("modelVersion") or "1.0")

    @property
    def handler(self) -> str:
        return str(self.model.get("handler") or "")


def _safe_member_path(name: str) -> PurePosixPath:
    """The relative path an archive entry may be written to, or raise InvalidArchive."""
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise InvalidArchive(f"archive entry {name!r} has an absolute path")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidArchive(f"archive entry {name!r} escapes the extraction directory")
    if not parts:
        raise InvalidArchive(f"archive entry {name!r} has an empty path")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts) \
            or len(text) > MAX_PATH_CHARS:
        raise InvalidArchive(f"archive entry {name[:60]!r}... has a name longer than "
                             f"{MAX_NAME_BYTES} bytes (per folder or file) or {MAX_PATH_CHARS} "
                             "characters (in all)")
    return PurePosixPath(*parts)


class _Names:
    """The files an archive holds, so that one named twice is refused."""

    def __init__(self) -> None:
        self.seen: set[PurePosixPath] = set()

    def add(self, rel: PurePosixPath, name: str) -> None:
        if rel in self.seen:
            raise InvalidArchive(f"archive holds {name[:200]!r} twice: which of the two counts "
                                 "would be up to the reader; refusing the ambiguous archive")
        self.seen.add(rel)


class _Budget:
    """Counts entries and unpacked bytes; refuses the archive as soon as a limit is passed."""

    def __init__(self, limits: Limits):
        self.limits, self.bytes, self.files = limits, 0, 0

    def add_file(self, name: str, declared_size: int = 0) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise InvalidArchive(f"archive has more than {self.limits.max_files} entries")
        if self.bytes + declared_size > self.limits.max_bytes:
            self._too_big(name)

    def _too_big(self, name: str) -> None:
        raise InvalidArchive(
            f"archive unpacks to more than {self.limits.max_bytes} bytes "
            f"(stopped at {name!r}); refusing it as a possible zip bomb")

    def copy(self, src: IO[bytes], dest: Path, name: str) -> None:
        with open(dest, "wb") as out:
            while chunk := src.read(min(_CHUNK, self.limits.max_bytes - self.bytes + 1)):
                self.bytes += len(chunk)
                if self.bytes > self.limits.max_bytes:
                    self._too_big(name)
                out.write(chunk)


def _extract_zip(path: Path, target: Path, limits: Limits) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidArchive(f"{path.name} is not a valid .mar/zip archive: {exc}") from None
    budget, names = _Budget(limits), _Names()
    with zf:
        infos = zf.infolist()
        declared = sum(info.file_size for info in infos)
        if len(infos) > limits.max_files:
            raise InvalidArchive(f"archive has {len(infos)} entries, more than {limits.max_files}")
        if declared > limits.max_bytes:
            raise InvalidArchive(f"archive declares {declared} unpacked bytes, more than "
                                 f"{limits.max_bytes}")
        for info in infos:
            rel = _safe_member_path(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InvalidArchive(f"archive entry {info.filename!r} is a symbolic link")
            dest = target.joinpath(*rel.parts)
            try:
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                names.add(rel, info.filename)
                budget.add_file(info.filename, info.file_size)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    budget.copy(src, dest, info.filename)
            except InvalidArchive:
                raise
            except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError,
                    RuntimeError, zlib.error) as exc:
                raise InvalidArchive(f"corrupt archive entry {info.filename!r}: {exc}") from None


def _check_declared_tar(tf: tarfile.TarFile, limits: Limits) -> None:
    """Read every header first (no data is written): refuse on the declared sizes and count."""
    declared = count = 0
    for member in tf:
        count += 1
        declared += max(member.size, 0)
        if count > limits.max_files:
            raise InvalidArchive(f"archive has more than {limits.max_files} entries")
        if declared > limits.max_bytes:
            raise InvalidArchive(f"archive declares more than {limits.max_bytes} unpacked "
                                 f"bytes (at entry {member.name[:200]!r}); refusing it as a "
                                 "possible tar bomb")


def _extract_tar(path: Path, target: Path, limits: Limits) -> None:
    budget, names = _Budget(limits), _Names()
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise InvalidArchive(f"{path.name} is not a valid tar archive: {exc}") from None
    with tf:
        try:
            _check_declared_tar(tf, limits)
            for member in tf.getmembers():
                rel = _safe_member_path(member.name)
                if member.issym() or member.islnk():
                    raise InvalidArchive(f"archive entry {member.name!r} is a link")
                dest = target.joinpath(*rel.parts)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise InvalidArchive(f"archive entry {member.name!r} is not a regular file")
                names.add(rel, member.name)
                budget.add_file(member.name, member.size)
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                budget.copy(src, dest, member.name)
        except InvalidArchive:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
            raise InvalidArchive(f"corrupt tar archive {path.name}: {exc}") from None


def archive_format(path: Path) -> str:
    """``dir``, ``zip`` or ``tar``, from the path's type and magic bytes."""
    try:
        if path.is_dir():
            return "dir"
        if not path.exists():
            raise InvalidArchive(f"{path.name}: No such file or directory")
        if not path.is_file():  # a FIFO or device would block or never end
            raise InvalidArchive(f"{path.name} is not a regular file or a directory")
        with open(path, "rb") as fh:
            head = fh.read(262)
    except OSError as exc:  # too long a name, a loop of links, no permission, ...
        raise InvalidArchive(f"cannot read {path.name[:200]!r}: {exc.strerror or exc}") from None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "tar"
    raise InvalidArchive(f"{path.name} is neither a .mar/zip, a .tar.gz nor a directory")


def extract(path: Path, workspace: Path, limits: Limits) -> Path:
    """Unpack ``path`` under ``workspace`` (or return it, if it is a directory).

    On any failure nothing is left under ``workspace``.
    """
    fmt = archive_format(path)
    if fmt == "dir":
        return path
    workspace.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=workspace))
    try:
        (_extract_zip if fmt == "zip" else _extract_tar)(path, tmp, limits)
        # tar.gz archives made by torch-model-archiver hold one top-level folder
        entries = [p for p in tmp.iterdir()]
        root = tmp
        if not (tmp / MANIFEST_PATH).exists() and len(entries) == 1 and entries[0].is_dir() \
                and (entries[0] / MANIFEST_PATH).exists():
            root = entries[0]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name.split(".")[0])[:64]
        final = Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=workspace))
        final.rmdir()
        os.replace(root, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_metadata(path: Path, name: str) -> str:
    """A manifest or config file's text, bounded in size."""
    if not path.is_file():
        raise InvalidArchive(f"{name} is not a regular file")
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise InvalidArchive(f"{name} is over {MAX_METADATA_BYTES} bytes")
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise InvalidArchive(f"{name} is not UTF-8 text: {exc}") from None


def _check_manifest_types(manifest: Any) -> None:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("model", {}), dict):
        raise InvalidArchive(f"{MANIFEST_PATH} must be an object with a 'model' object")
    model = manifest.get("model", {})
    for key in STRING_FIELDS:
        value = model.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidArchive(f"{MANIFEST_PATH}: model.{key} must be a string, not "
                                 f"{type(value).__name__}")
    if not isinstance(manifest.get("runtime", ""), str):
        raise InvalidArchive(f"{MANIFEST_PATH}: runtime must be a string")
    if model.get("modelVersion"):
        check_version(model["modelVersion"])


def read_manifest(model_dir: Path) -> dict:
    """The archive's manifest; a directory without one gets a manifest guessed from its files."""
    manifest_file = model_dir / MANIFEST_PATH
    if manifest_file.exists():
        try:
            manifest = json.loads(read_metadata(manifest_file, MANIFEST_PATH))
        except ValueError as exc:
            raise InvalidArchive(f"{MANIFEST_PATH} is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidArchive(f"{MANIFEST_PATH} is nested too deeply") from None
        _check_manifest_types(manifest)
        return manifest
    weights = sorted(p.name for p in model_dir.iterdir()
                     if p.suffix in (".pt", ".pth", ".pt2", ".ts", ".onnx"))
    model: dict[str, Any] = {"modelName": model_dir.name, "modelVersion": "1.0", "handler": ""}
    if len(weights) == 1:
        model["serializedFile"] = weights[0]
    return {"runtime": "python", "model": model}


def read_model_config(model_dir: Path, manifest: dict) -> dict:
    """The parsed ``model-config.yaml`` named by the manifest (``configFile``), or ``{}``."""
    name = manifest.get("model", {}).get("configFile")
    if not name:
        if (model_dir / "model-config.yaml").exists():
            name = "model-config.yaml"
        else:
            return {}
    cfg_path = confined_path(model_dir, str(name), "configFile", InvalidArchive)
    if not cfg_path.exists():
        raise InvalidArchive(f"manifest field configFile names {str(name)[:200]!r}, which is not "
                             "in the archive")
    data = read_yaml(cfg_path, str(name)) or {}
    if not isinstance(data, dict):
        raise InvalidArchive(f"{name} must hold a mapping at top level")
    return data


def read_yaml(path: Path, name: str) -> Any:
    """An archive's YAML file (model-config.yaml, a workflow spec), parsed with its size and
    alias expansion bounded; InvalidArchive naming the file for anything wrong with it."""
    from ..config.bounded_yaml import (  # only needed when an archive has one
        YamlTooLarge,
        load_bounded,
    )

    try:
        return load_bounded(read_metadata(path, name))
    except YamlTooLarge as exc:
        raise InvalidArchive(f"{name}: {exc}") from None
    except RecursionError:
        raise InvalidArchive(f"{name} is nested too deeply") from None
    except Exception as exc:  # yaml.YAMLError, or a value PyYAML cannot build
        raise InvalidArchive(f"{name} is not valid YAML: {exc}") from None


def confined_path(model_dir: Path | str, name: str, field_name: str,
                  error: type[TsfError] = InvalidArchive) -> Path:
    """``model_dir / name``, or ``error`` naming the field if it resolves outside the folder.

    Symbolic links are resolved first, so a link inside the folder cannot point out of it.
    """
    root = Path(model_dir).resolve()
    try:
        candidate = (root / name).resolve()
        candidate.relative_to(root)
    except (ValueError, OSError, RuntimeError):
        raise error(f"manifest field {field_name} names {name[:200]!r}, which is outside the "
                    "model's folder; every file an archive names must be inside it") from None
    return candidate


def _named_files(model: dict) -> list[tuple[str, str]]:
    named = []
    for key in PATH_FIELDS:
        value = model.get(key)
        if not value:
            continue
        parts = value.split(",") if key == "extraFiles" else [value]
        named += [(key, part.strip()) for part in parts if part.strip()]
    handler_file = str(model.get("handler") or "").partition(":")[0]
    if handler_file.endswith(".py"):
        named.append(("handler", handler_file))
    return named


def check_paths(archive: ModelArchive) -> None:
    """Refuse (400, naming the field) any manifest path that leads outside the model's folder,
    and a handler that is a path but not a ``.py`` file (it can only be a plugin's name)."""
    for key, name in _named_files(archive.model):
        confined_path(archive.model_dir, name, key, InvalidArchive)
    handler = archive.handler
    if not handler.partition(":")[0].endswith(".py") and ("/" in handler or "\\" in handler):
        raise InvalidArchive(f"manifest field handler names {handler[:200]!r}: a handler is a "
                             "plugin's handler name or a .py file in the archive")


def open_archive(path: Path, workspace: Path, limits: Limits) -> ModelArchive:
    """Extract (if needed) and read an archive; a refused archive leaves nothing behind."""
    model_dir = extract(Path(path), workspace, limits)
    try:
        manifest = read_manifest(model_dir)
        archive = ModelArchive(model_dir=model_dir, manifest=manifest,
                               model_config=read_model_config(model_dir, manifest))
        check_paths(archive)
        return archive
    except BaseException:
        if model_dir != Path(path):
            shutil.rmtree(model_dir, ignore_errors=True)
        raise

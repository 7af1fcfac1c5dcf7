"""Message classes and service stubs compiled from ``protos/`` on first use.

Generated protobuf code must not be newer than the protobuf runtime, so tsf ships the ``.proto``
files and compiles them with the installed ``grpcio-tools``.  The result is cached under
``$XDG_CACHE_HOME/tsf/grpc/<digest>`` (the digest covers the protos and both versions), so a
server compiles once per installation.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from ..errors import TsfError

PROTOS = Path(__file__).parent / "protos"
PACKAGE = "tsf_grpc_generated"
FILES = ("tsf_torchserve_inference", "tsf_torchserve_management", "tsf_oip")


class GrpcUnavailable(TsfError):
    """gRPC was asked for but its packages are missing."""


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tsf" / "grpc"


def _digest() -> str:
    import google.protobuf
    import grpc_tools

    h = hashlib.sha256()
    for name in FILES:
        h.update((PROTOS / f"{name}.proto").read_bytes())
    h.update(google.protobuf.__version__.encode())
    h.update(getattr(grpc_tools, "__version__", "").encode())
    return h.hexdigest()[:16]


def _include_dirs() -> list[str]:
    """Where ``google/protobuf/*.proto`` (grpcio-tools) and ``google/rpc/*.proto`` live."""
    import grpc_tools

    dirs = [str(Path(grpc_tools.__file__).parent / "_proto")]
    for entry in sys.path:
        if (Path(entry) / "google" / "rpc" / "status.proto").is_file():
            dirs.append(entry)
            break
    return dirs


def _compile(target: Path) -> None:
    from grpc_tools import protoc

    work = Path(tempfile.mkdtemp(prefix="tsf-grpc-"))
    try:
        package = work / "src" / PACKAGE
        package.mkdir(parents=True)
        for name in FILES:
            shutil.copy(PROTOS / f"{name}.proto", package / f"{name}.proto")
        out = work / "out"
        out.mkdir()
        args = ["protoc", f"-I{work / 'src'}", *(f"-I{d}" for d in _include_dirs()),
                f"--python_out={out}", f"--grpc_python_out={out}",
                *(f"{PACKAGE}/{name}.proto" for name in FILES)]
        if protoc.main(args) != 0:
            raise GrpcUnavailable("compiling tsf's gRPC protos failed; see the log")
        (out / PACKAGE / "__init__.py").write_text("")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            (out / PACKAGE).rename(target)
        except OSError:  # another process won the race, or target is on another filesystem
            if not target.exists():
                shutil.copytree(out / PACKAGE, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load() -> dict[str, ModuleType]:
    """``{"<file>_pb2": module, "<file>_pb2_grpc": module}`` for every proto file."""
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        raise GrpcUnavailable("gRPC needs grpcio and grpcio-tools: "
                              "pip install 'tsf-framework[grpc]'") from None
    root = _cache_root() / _digest()
    target = root / PACKAGE
    if not (target / "__init__.py").exists():
        try:
            _compile(target)
        except OSError:  # an unwritable or read-only cache: compile into a private temp dir
            root = Path(tempfile.mkdtemp(prefix="tsf-grpc-cache-"))
            target = root / PACKAGE
            _compile(target)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    modules = {}
    for name in FILES:
        for suffix in ("_pb2", "_pb2_grpc"):
            modules[name + suffix] = importlib.import_module(f"{PACKAGE}.{name}{suffix}")
    return modules

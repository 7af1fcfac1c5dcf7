"""``.pt2`` files in a worker: AOTInductor packages and ``torch.export`` programs.

Both are zip files named ``.pt2``; an AOTInductor package holds compiled code under
``data/aotinductor/``.  A package is loaded with ``torch._inductor.aoti_load_package`` on the
worker's device (one compiled for another kind of device is refused, naming both); a program
with ``torch.export.load(...).module()`` (an int8 program's quantized operators are
torchao's: it is imported for those only).

Both may be exported with a dynamic batch dimension that has an upper bound (``tsf optimize``
uses ``--max-batch``, 8 by default).  A compiled package does not check it, and a program
refuses a larger batch, so the model is wrapped in :class:`BatchLimited`, which runs a larger
batch in slices of at most that size.  The bound comes from the package's ``tsf.max_batch``
metadata or the program's range constraints.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError

MAX_BATCH_KEY = "tsf.max_batch"  # AOTInductor package metadata written by tsf optimize


def is_aoti_package(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/data/aotinductor/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


class BatchLimited(torch.nn.Module):
    """Runs ``inner`` on batches of at most ``max_batch`` rows, slicing larger ones."""

    def __init__(self, inner: Any, max_batch: int, form: str) -> None:
        super().__init__()
        self.inner = inner
        self.max_batch = max_batch
        self.form = form  # "aoti" or "export", for logs and the profiler

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] <= self.max_batch:
            return self.inner(x, *args, **kwargs)
        return _join([self.inner(part, *args, **kwargs) for part in x.split(self.max_batch)])


def _join(outputs: list) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, (tuple, list)):
        return type(first)(_join([o[i] for o in outputs]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _join([o[k] for o in outputs]) for k in first}
    return outputs


def _device_index(device: str) -> int:
    kind, _, index = str(device).partition(":")
    return int(index) if kind == "cuda" and index else (0 if kind == "cuda" else -1)


def load_aoti(path: Path, device: str) -> Any:
    runner = torch._inductor.aoti_load_package(str(path), device_index=_device_index(device))
    metadata = runner.get_metadata()
    built_for = metadata.get("AOTI_DEVICE_KEY", "cpu")
    wanted = str(device).partition(":")[0]
    if built_for != wanted:
        raise ModelLoadError(f"{path.name} is an AOTInductor package compiled for {built_for}, "
                             f"but this worker runs on {wanted}: compile it for {wanted} "
                             f"(tsf optimize --device {wanted})")
    limit = metadata.get(MAX_BATCH_KEY)
    return BatchLimited(runner, int(limit), "aoti") if limit else runner


def _export_max_batch(program: Any) -> int | None:
    """The upper bound of the first input's batch dimension, if it is dynamic and bounded."""
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"
              and n.name in program.graph_signature.user_inputs]
    value = inputs[0].meta.get("val") if inputs else None
    if value is None or not hasattr(value, "shape") or not value.shape:
        return None
    size = value.shape[0]
    if isinstance(size, int):
        return None
    for symbol, bounds in program.range_constraints.items():
        if str(symbol) == str(size):
            try:  # an unbounded dimension's upper bound is torch's int_oo
                return int(bounds.upper)
            except (TypeError, ValueError, AttributeError, OverflowError):
                return None
    return None


def load_export(path: Path, device: str) -> Any:
    try:
        program = torch.export.load(str(path))
    except Exception:
        # an int8 program's quantized_decomposed operators are registered by torchao: import
        # it (only then: it takes a second) and try again
        if "torchao.quantization.pt2e" in sys.modules:
            raise
        try:
            import torchao.quantization.pt2e  # noqa: F401
        except ImportError:
            raise
        program = torch.export.load(str(path))
    limit = _export_max_batch(program)
    module = program.module()
    try:
        module = module.to(device)
    except Exception:  # some programs refuse .to(); they stay where they were saved
        pass
    return BatchLimited(module, limit, "export") if limit else module


def load_pt2(path: Path, device: str) -> Any:
    """The model in a ``.pt2`` file, ready to call on ``device``."""
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path.name} is not a .pt2 file (a torch.export program or an "
                             "AOTInductor package are zip files)")
    if is_aoti_package(path):
        return load_aoti(path, device)
    try:
        return load_export(path, device)
    except Exception as exc:
        raise ModelLoadError(f"{path.name} could not be loaded as a torch.export program "
                             f"({type(exc).__name__}: {exc})") from None

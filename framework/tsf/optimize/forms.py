"""The forms ``tsf optimize`` makes: a ``torch.export`` program with a dynamic batch
dimension, its int8 quantization (PT2E, torchao's ``X86InductorQuantizer``: static int8
activations and weights, calibrated on the sample inputs), and an AOTInductor package of
either (compiled with freezing, which the oneDNN convolution fusions and the int8 kernels
need, and which inductor applies only with gradients off).

A model that does not export is refused with torch's reason (its first lines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadRequest
from ..runtime.pt2 import MAX_BATCH_KEY, BatchLimited

REASON_LINES = 6


class NotExportable(BadRequest):
    """The model cannot be exported (or quantized, or compiled); the message says why."""


def _reason(what: str, exc: Exception) -> NotExportable:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()][:REASON_LINES]
    return NotExportable(f"the model does not {what}: {type(exc).__name__}: " +
                         "\n".join(lines))


def plain_module(model: Any) -> Any:
    """The ``nn.Module`` to export: TorchScript is converted first (``TS2EPConverter``)."""
    import torch

    if isinstance(model, BatchLimited) or not isinstance(model, torch.nn.Module):
        raise BadRequest("the archive's model is already an exported program or a compiled "
                         "package; optimize the archive it was made from")
    return model


def export(model: Any, example: Any, max_batch: int, strict: bool = False) -> Any:
    """``model`` as an ExportedProgram whose first input has a batch dimension of 1 to
    ``max_batch``."""
    import torch
    from torch.export import Dim

    dynamic = ({0: Dim("batch", min=1, max=max_batch)},)
    try:
        if isinstance(model, torch.jit.ScriptModule):
            from torch._export.converter import TS2EPConverter

            model = TS2EPConverter(model, (example,)).convert().module()
        return torch.export.export(model, (example,), dynamic_shapes=dynamic, strict=strict)
    except Exception as exc:
        raise _reason("export with torch.export", exc) from None


def quantize_int8(model: Any, example: Any, calibration: Any, max_batch: int) -> Any:
    """A statically quantized int8 ExportedProgram, calibrated on ``calibration`` (rows of
    model input)."""
    import torch

    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise BadRequest("--quantize int8 needs torchao: pip install torchao") from None
    # strict: torchvision's ResNets call one nn.ReLU module twice per block, and a non-strict
    # export gives both calls one partition, which prepare_pt2e refuses
    graph = export(model, example, max_batch, strict=True).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    try:
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for rows in calibration.split(max_batch):
                prepared(rows)
        converted = convert_pt2e(prepared)
    except Exception as exc:
        raise _reason("quantize to int8 (PT2E)", exc) from None
    return export(converted, example, max_batch)


def compile_aot(program: Any, path: Path, max_batch: int) -> Path:
    """An AOTInductor package of ``program`` at ``path`` (minutes on a small CPU)."""
    import torch

    configs = {"freezing": True, "aot_inductor.metadata": {MAX_BATCH_KEY: str(max_batch)}}
    try:
        with torch.no_grad():
            return Path(torch._inductor.aoti_compile_and_package(
                program, package_path=str(path), inductor_configs=configs))
    except Exception as exc:
        raise _reason("compile with AOTInductor", exc) from None


def save_program(program: Any, path: Path) -> Path:
    import torch

    torch.export.save(program, str(path))
    return path

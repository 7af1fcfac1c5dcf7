"""``tsf optimize IN.mar -o OUT.mar [--export] [--aot] [--quantize int8] [--sample-input FILE...]``.

Loads IN's handler and model here, turns the sample inputs into model inputs with that
handler, makes the asked form (an exported program, an AOTInductor package, int8 either way),
loads the result with the worker's own loader, prints the before/after table, and writes OUT:
IN's files with the ``.pt2`` as its ``serializedFile`` (``modelFile`` dropped from the
manifest: the model's code is in the program now) and a ``tsfOptimized`` manifest entry saying
what was done.  Nothing is written when any step fails.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..archives.reader import MANIFEST_PATH
from ..errors import BadRequest
from . import forms, measure
from .samples import LoadedArchive, sample_batch


@dataclass
class OptimizeRequest:
    """What ``tsf optimize`` was asked (its command-line flags)."""

    archive: Path
    output: Path
    export: bool = False
    aot: bool = False
    quantize: str | None = None
    samples: list[Path] = field(default_factory=list)
    input_shape: list[int] | None = None
    max_batch: int = 8
    device: str = "cpu"
    rounds: int = 3
    seconds: float = 2.0
    force: bool = False

    @property
    def form(self) -> str:
        kind = "aot" if self.aot else "export"
        return f"{kind}-{self.quantize}" if self.quantize else f"{kind}-fp32"


def check_request(request: OptimizeRequest) -> None:
    if not (request.export or request.aot or request.quantize):
        raise BadRequest("say what to make: --export, --aot and/or --quantize int8")
    if request.quantize not in (None, "int8"):
        raise BadRequest(f"--quantize {request.quantize}: only int8 is supported")
    if request.quantize and request.device != "cpu":
        raise BadRequest("--quantize int8 uses X86InductorQuantizer, for CPUs (--device cpu)")
    if not 1 <= request.max_batch <= 4096:
        raise BadRequest("--max-batch must be between 1 and 4096")
    if request.output.exists() and not request.force:
        raise BadRequest(f"{request.output} already exists; use -f to overwrite")
    if not request.archive.exists():
        raise BadRequest(f"{request.archive} does not exist")


def optimize(request: OptimizeRequest, say: Any = print) -> dict:
    """Make the optimized archive; return the report (also printed through ``say``)."""
    import torch

    check_request(request)
    with tempfile.TemporaryDirectory(prefix="tsf-optimize-") as tmp:
        work = Path(tmp)
        loaded = LoadedArchive(request.archive, work / "in", request.device)
        model = forms.plain_module(loaded.model)
        inputs, real = sample_batch(loaded, request.samples, request.input_shape,
                                    max(2, request.max_batch))
        example = _example(inputs, request.max_batch)
        started = time.perf_counter()
        if request.quantize:
            say(f"quantizing to int8 (calibrating on {inputs.shape[0]} samples) ...")
            program = forms.quantize_int8(model, example, inputs, request.max_batch)
        else:
            say("exporting with torch.export ...")
            program = forms.export(model, example, request.max_batch)
        stem = Path(loaded.archive.model.get("serializedFile") or "model").stem
        pt2 = work / f"{stem}-{request.form}.pt2"
        if request.aot:
            say("compiling with AOTInductor (this takes minutes on a small CPU) ...")
            forms.compile_aot(program, pt2, request.max_batch)
        else:
            forms.save_program(program, pt2)
        built = time.perf_counter() - started
        from ..runtime.pt2 import load_pt2

        optimized = load_pt2(pt2, str(loaded.context.device))
        before = measure.outputs(model, inputs, request.max_batch)
        after = measure.outputs(optimized, inputs, request.max_batch)
        accuracy = measure.agreement(before, after)
        speeds = measure.compare_speed({"original": model, request.form: optimized}, inputs,
                                       request.max_batch, request.rounds, request.seconds)
        original = _form_name(model)
        text = measure.table([(original, speeds["original"], None),
                              (request.form, speeds[request.form], accuracy)],
                             request.max_batch)
        report = {"input": str(request.archive), "output": str(request.output),
                  "form": request.form, "max_batch": request.max_batch,
                  "device": request.device, "threads": torch.get_num_threads(),
                  "samples": int(inputs.shape[0]), "real_samples": real,
                  "build_seconds": round(built, 1), "accuracy": accuracy,
                  "speed": {name: {"batch1_p50_ms": s.p50_ms, "batch1_best_ms": s.best_ms,
                                   "throughput": s.throughput,
                                   "best_throughput": s.best_throughput}
                            for name, s in speeds.items()}, "table": text}
        _write(loaded, pt2, request, report)
    say(f"{request.archive} -> {request.output}: {original} -> {request.form}, batch 1 to "
        f"{request.max_batch}, {request.device}, {report['threads']} torch threads, built in "
        f"{built:.0f} s; {report['samples']} {'sample' if real else 'random'} inputs")
    say(text)
    return report


def _example(inputs: Any, max_batch: int) -> Any:
    """Export's example input: at least 2 rows (a batch of 1 would be taken as fixed)."""
    import torch

    rows = inputs[:max(2, min(max_batch, inputs.shape[0]))]
    if rows.shape[0] < 2:
        rows = torch.cat([rows, rows])
    return rows.clone()  # not a view: the program stores its example inputs


def _form_name(model: Any) -> str:
    import torch

    return "torchscript" if isinstance(model, torch.jit.ScriptModule) else "eager"


def _write(loaded: LoadedArchive, pt2: Path, request: OptimizeRequest, report: dict) -> None:
    """The new archive: the input's files, the new serialized file, an updated manifest."""
    folder = Path(loaded.archive.model_dir)
    manifest = json.loads(json.dumps(loaded.archive.manifest))
    model = manifest.setdefault("model", {})
    old = model.get("serializedFile")
    model["serializedFile"] = pt2.name
    model.pop("modelFile", None)
    manifest["tsfOptimized"] = {
        "form": request.form, "from": old, "maxBatch": request.max_batch,
        "device": request.device, "torch": _torch_version(), "machine": platform.machine(),
        "accuracy": report["accuracy"], "samples": report["samples"]}
    output = request.output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                name = path.relative_to(folder).as_posix()
                if name == MANIFEST_PATH or name == old:
                    continue
                archive.write(path, name)
            archive.write(pt2, pt2.name, compress_type=zipfile.ZIP_STORED)  # a zip already
            archive.writestr(MANIFEST_PATH, json.dumps(manifest, indent=2))
        partial.replace(output)
    finally:
        if partial.exists():
            partial.unlink()
    shutil.rmtree(folder, ignore_errors=True)


def _torch_version() -> str:
    import torch

    return torch.__version__

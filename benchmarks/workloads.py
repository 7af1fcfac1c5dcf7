"""The benchmark's models, archived once with torch-model-archiver so every server loads the same.

* ``mlp``: 64 -> 256 -> 256 -> 10, JSON input (overhead-dominated);
* ``conv``: ResNet-18 at 224x224, raw float32 input (compute-dominated); its batch sizes are
  candidates, of which ``compare.py`` serves the one with the best in-process ceiling;
* ``jpeg``: ResNet-18 behind the ``image_classifier`` handler, JPEG input (the real path).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).parent


@dataclass
class Workload:
    name: str
    body: bytes
    content_type: str
    batch_sizes: list[int]
    serialized: str  # the TorchScript file in the store's src/ folder


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()


def resnet18() -> torch.nn.Module:
    from torchvision.models import resnet18 as build

    torch.manual_seed(0)
    return build(weights=None).eval()


def jpeg_bytes() -> bytes:
    from PIL import Image

    torch.manual_seed(0)
    pixels = (torch.rand(3, 300, 400) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _archive(src: Path, store: Path, name: str, serialized: Path, handler: str,
             extra: list[Path] | None = None) -> None:
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    cmd = [str(archiver), "--model-name", name, "--version", "1.0", "--serialized-file",
           str(serialized), "--handler", handler, "--export-path", str(store), "--force"]
    if extra:
        cmd += ["--extra-files", ",".join(str(p) for p in extra)]
    subprocess.run(cmd, check=True)


def build(store: Path, names: tuple[str, ...] = ("mlp", "conv", "jpeg")) -> list[Workload]:
    """Write the archives of the named workloads into ``store``; return those workloads."""
    store.mkdir(parents=True, exist_ok=True)
    src = store / "src"
    src.mkdir(exist_ok=True)
    handler = str(HERE / "handlers" / "tensor_handler.py")
    found = []
    if "mlp" in names:
        torch.jit.script(mlp()).save(str(src / "mlp.pt"))
        _archive(src, store, "mlp", src / "mlp.pt", handler)
        found.append(Workload("mlp", json.dumps([0.5] * 64).encode(), "application/json",
                              [1, 8], "mlp.pt"))
    if "conv" in names or "jpeg" in names:
        torch.jit.script(resnet18()).save(str(src / "resnet18.pt"))
    if "conv" in names:
        _archive(src, store, "conv", src / "resnet18.pt", handler)
        image = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
        found.append(Workload("conv", image.numpy().tobytes(), "application/octet-stream",
                              [1, 2, 4, 8], "resnet18.pt"))
    if "jpeg" in names:
        (src / "index_to_name.json").write_text(json.dumps({str(i): f"class_{i}"
                                                            for i in range(1000)}))
        _archive(src, store, "jpeg", src / "resnet18.pt", "image_classifier",
                 [src / "index_to_name.json"])
        found.append(Workload("jpeg", jpeg_bytes(), "image/jpeg", [4], "resnet18.pt"))
    return found

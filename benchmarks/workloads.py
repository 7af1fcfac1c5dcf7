"""The benchmark's models, archived once so every server loads the same files.

* ``mlp``: 64 -> 256 -> 256 -> 10, JSON input (overhead-dominated), a ``torch.export``
  program behind ``handlers/tensor_handler.py``;
* ``conv``: ResNet-18 at 224x224, raw float32 input (compute-dominated), a ``torch.export``
  program; its batch sizes are candidates, of which ``compare.py`` serves the one with the
  best in-process ceiling;
* ``jpeg``: ResNet-18 behind ``image_classifier`` on JPEG input (the real path): an eager
  archive (``--model-file`` + state_dict), which TorchServe's own ``image_classifier`` serves
  too;
* ``jpeg-int8``: the same archive through ``tsf optimize --aot --quantize int8`` (tsf only:
  TorchServe cannot load the package), calibrated on 32 generated pictures.

TorchScript is gone from the benchmark: ``torch.jit`` is deprecated in torch 2.14, and
``torch.export`` / AOTInductor replace it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).parent
RESNET = '''
from torchvision.models.resnet import BasicBlock, ResNet


class ResNet18(ResNet):
    def __init__(self):
        super().__init__(BasicBlock, [2, 2, 2, 2])
'''
IMAGE_OPTIONS = {"resize": 256, "crop": 224}


@dataclass
class Workload:
    name: str
    body: bytes
    content_type: str
    batch_sizes: list[int]
    model: str  # the file in the store's src/ folder the ceiling loads
    kind: str = "tensor"  # "tensor": the body is the model's input; "image": a JPEG
    peers: bool = True  # whether TorchServe (and LitServe, for JSON) serve it too
    extra: dict = field(default_factory=dict)


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()


def resnet18() -> torch.nn.Module:
    from torchvision.models import resnet18 as build

    torch.manual_seed(0)
    return build(weights=None).eval()


def photo(seed: int = 0, size: tuple[int, int] = (500, 375)) -> bytes:
    """A photo-like JPEG (smooth shapes, texture, noise) of ImageNet's typical size."""
    from PIL import Image, ImageDraw, ImageFilter

    generator = torch.Generator().manual_seed(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in torch.randint(0, 256, (3,),
                                                                       generator=generator)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = (int(torch.randint(0, d, (1,), generator=generator)) for d in size)
        x1, y1 = x0 + width // 3, y0 + height // 3
        colour = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=generator))
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(3))
    noise = (torch.randn(height, width, 3, generator=generator) * 12).numpy()
    pixels = (torch.from_numpy(noise) + torch.tensor(list(image.getdata()), dtype=torch.float64)
              .view(height, width, 3)).clamp(0, 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def export_program(model: torch.nn.Module, example: torch.Tensor, max_batch: int,
                   path: Path) -> None:
    """``model`` saved as a ``torch.export`` program with a batch dimension of 1 to
    ``max_batch``."""
    from torch.export import Dim

    program = torch.export.export(model, (example,),
                                  dynamic_shapes=({0: Dim("batch", min=1, max=max_batch)},))
    torch.export.save(program, str(path))


def _archive(store: Path, name: str, serialized: Path, handler: str,
             model_file: Path | None = None, extra: list[Path] | None = None,
             config: Path | None = None) -> None:
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    cmd = [str(archiver), "--model-name", name, "--version", "1.0", "--serialized-file",
           str(serialized), "--handler", handler, "--export-path", str(store), "--force"]
    if model_file:
        cmd += ["--model-file", str(model_file)]
    if extra:
        cmd += ["--extra-files", ",".join(str(p) for p in extra)]
    if config:
        cmd += ["--config-file", str(config)]
    subprocess.run(cmd, check=True)


def build(store: Path, names: tuple[str, ...] = ("mlp", "conv", "jpeg")) -> list[Workload]:
    """Write the archives of the named workloads into ``store``; return those workloads."""
    store.mkdir(parents=True, exist_ok=True)
    src = store / "src"
    src.mkdir(exist_ok=True)
    handler = str(HERE / "handlers" / "tensor_handler.py")
    found = []
    if "mlp" in names:
        export_program(mlp(), torch.zeros(2, 64), 64, src / "mlp.pt2")
        _archive(store, "mlp", src / "mlp.pt2", handler)
        found.append(Workload("mlp", json.dumps([0.5] * 64).encode(), "application/json",
                              [1, 8], "mlp.pt2"))
    if "conv" in names:
        export_program(resnet18(), torch.zeros(2, 3, 224, 224), 8, src / "resnet18.pt2")
        _archive(store, "conv", src / "resnet18.pt2", handler)
        image = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
        found.append(Workload("conv", image.numpy().tobytes(), "application/octet-stream",
                              [1, 2, 4, 8], "resnet18.pt2"))
    if "jpeg" in names or "jpeg-int8" in names:
        (src / "resnet18_model.py").write_text(RESNET)
        torch.save(resnet18().state_dict(), src / "resnet18.pth")
        (src / "index_to_name.json").write_text(json.dumps({str(i): f"class_{i}"
                                                            for i in range(1000)}))
        _archive(store, "jpeg", src / "resnet18.pth", "image_classifier",
                 model_file=src / "resnet18_model.py", extra=[src / "index_to_name.json"])
    if "jpeg" in names:
        found.append(Workload("jpeg", photo(), "image/jpeg", [4], "resnet18.pth", "image"))
    if "jpeg-int8" in names:
        samples = src / "samples"
        samples.mkdir(exist_ok=True)
        files = []
        for seed in range(32):
            files.append(samples / f"{seed}.jpg")
            files[-1].write_bytes(photo(seed + 1))
        out = subprocess.run(
            [sys.executable, "-m", "tsf.cli", "optimize", str(store / "jpeg.mar"), "-o",
             str(store / "jpeg-int8.mar"), "--aot", "--quantize", "int8", "--sample-input",
             *map(str, files), "--rounds", "1", "--seconds", "1", "-f"],
            capture_output=True, text=True, check=True)
        print(out.stdout)
        from zipfile import ZipFile

        with ZipFile(store / "jpeg-int8.mar") as archive:
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
            pt2 = manifest["model"]["serializedFile"]
            (src / pt2).write_bytes(archive.read(pt2))
        found.append(Workload("jpeg-int8", photo(), "image/jpeg", [4], pt2, "image",
                              peers=False))
    return found

"""``tsf optimize`` end to end: a small CNN trained here on a synthetic task (which quadrant
holds the bright square), archived eager behind ``image_classifier``, made into an int8
AOTInductor archive from 200 sample JPEGs (compiled once for the module: about half a minute),
then both archives served side by side; an MLP exported only; a model that does not export
refused with the reason."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess

CNN = '''
    import torch

    class QuadrantNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
            self.head = torch.nn.Linear(16 * 8 * 8, 4)

        def forward(self, x):
            return self.head(torch.flatten(self.features(x), 1))
'''
MLP = '''
    import torch

    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                              torch.nn.Linear(32, 3))

        def forward(self, x):
            return self.layers(x)
'''
BRANCHY = '''
    import torch

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # depends on the data: torch.export cannot trace it
                return self.linear(x)
            return -self.linear(x)
'''
CONFIG = "handler:\n  resize: 32\n  crop: 32\n  topk: 1\n"


def quadrant_image(rng: np.random.Generator, label: int) -> bytes:
    """A 40 x 40 noisy picture with a bright square in quadrant ``label``, as a JPEG."""
    pixels = rng.normal(90, 30, (40, 40, 3))
    top, left = (label // 2) * 20 + rng.integers(1, 8), (label % 2) * 20 + rng.integers(1, 8)
    pixels[top:top + 10, left:left + 10] += rng.normal(120, 20, 3)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _module(src: Path, name: str, code: str):
    path = src / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return path, next(v for k, v in namespace.items() if isinstance(v, type) and
                      issubclass(v, torch.nn.Module) and v is not torch.nn.Module)


def train(model: torch.nn.Module, rng: np.random.Generator) -> None:
    """A few hundred steps on fresh pictures, preprocessed as the handler does."""
    from tsf_handler_image.decoding import decode_image
    from tsf_handler_image.vision import VisionHandler

    options = {**VisionHandler.defaults, "resize": 32, "crop": 32}
    transform = VisionHandler().build_transform(options)
    labels = rng.integers(0, 4, 640)
    x = torch.stack([transform(decode_image(quadrant_image(rng, int(y)))) for y in labels])
    y = torch.as_tensor(labels)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(200):
        rows = torch.randint(0, len(y), (64,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
        optimizer.step()
    model.eval()


def optimize(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsf.cli", "optimize", *args],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The eager archives, the int8 AOTInductor one made from them, and its report."""
    src, store = tmp_path_factory.mktemp("opt-src"), tmp_path_factory.mktemp("opt-store")
    rng = np.random.default_rng(0)
    cnn_file, cnn_class = _module(src, "quadrant", CNN)
    cnn = cnn_class()
    train(cnn, rng)
    torch.save(cnn.state_dict(), src / "quadrant.pth")
    (src / "config.yaml").write_text(CONFIG)
    (src / "index_to_name.json").write_text(json.dumps({str(i): f"q{i}" for i in range(4)}))
    write_archive(ArchiveSpec(model_name="quadrant", serialized_file=str(src / "quadrant.pth"),
                              model_file=str(cnn_file), handler="image_classifier",
                              config_file=str(src / "config.yaml"), export_path=str(store),
                              extra_files=str(src / "index_to_name.json")))
    samples = src / "samples"
    samples.mkdir()
    truth = []
    for i in range(200):
        label = int(rng.integers(0, 4))
        truth.append(label)
        (samples / f"{i:03d}.jpg").write_bytes(quadrant_image(rng, label))
    files = sorted(str(p) for p in samples.iterdir())
    done = optimize(str(store / "quadrant.mar"), "-o", str(store / "quadrant-int8.mar"),
                    "--aot", "--quantize", "int8", "--sample-input", *files, "--json",
                    "--rounds", "1", "--seconds", "0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    mlp_file, mlp_class = _module(src, "mlp", MLP)
    torch.manual_seed(0)
    torch.save(mlp_class().state_dict(), src / "mlp.pth")
    write_archive(ArchiveSpec(model_name="mlp", serialized_file=str(src / "mlp.pth"),
                              model_file=str(mlp_file), export_path=str(store)))
    return store, src, files, truth, report


@pytest.fixture(scope="module")
def server(built):
    server = ServerProcess(model_store=built[0])
    yield server
    server.stop()


def test_int8_agrees_with_fp32_on_the_samples_and_says_so(built):
    report = built[4]
    accuracy = report["accuracy"]
    assert accuracy["samples"] == 200 and report["real_samples"]
    assert accuracy["top1_agree"] >= 198, report["table"]  # at least 99 %
    assert report["form"] == "aot-int8" and report["max_batch"] == 8
    assert "| aot-int8 |" in report["table"] and "| eager |" in report["table"]
    with zipfile.ZipFile(built[0] / "quadrant-int8.mar") as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        names = archive.namelist()
    model = manifest["model"]
    assert model["serializedFile"] == "quadrant-aot-int8.pt2" and "modelFile" not in model
    assert "quadrant.pth" not in names and "index_to_name.json" in names
    assert manifest["tsfOptimized"]["form"] == "aot-int8"


def test_the_optimized_archive_serves_the_same_classes(built, server):
    store, _, files, truth, _ = built
    for name in ("quadrant", "quadrant-int8"):
        assert server.register(f"{name}.mar", model_name=name.replace("-", "_"),
                               batch_size=4, max_batch_delay=20).status_code == 200
    agree = right = 0
    for path, label in zip(files[:24], truth[:24]):
        data = Path(path).read_bytes()
        eager = server.post("/predictions/quadrant", data=data)
        int8 = server.post("/predictions/quadrant_int8", data=data)
        assert eager.status_code == int8.status_code == 200, int8.text
        agree += list(eager.json()) == list(int8.json())
        right += list(int8.json()) == [f"q{label}"]
    assert agree >= 23 and right >= 20


def test_an_exported_program_serves_the_base_handler(built, server):
    store = built[0]
    done = optimize(str(store / "mlp.mar"), "-o", str(store / "mlp-export.mar"), "--export",
                    "--input-shape", "16", "--rounds", "1", "--seconds", "0.2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| export-fp32 |" in done.stdout and "max abs output diff" in done.stdout
    for name in ("mlp", "mlp-export"):
        assert server.register(f"{name}.mar", model_name=name.replace("-", "_"),
                               batch_size=1).status_code == 200
    x = [0.1 * i - 0.5 for i in range(16)]
    want = server.post("/predictions/mlp", json=x).json()
    got = server.post("/predictions/mlp_export", json=x).json()
    assert len(got) == len(want) == 3 and got == pytest.approx(want, abs=1e-5)
    # an input the program was not exported for is the client's error, not the handler's
    wrong = server.post("/predictions/mlp_export", json=[[0.0] * 16])
    assert wrong.status_code == 400 and "Guard failed" in wrong.json()["message"]
    # a batch larger than the program's bound (8) runs in slices
    assert server.register("mlp-export.mar", model_name="mlp_export_b12", batch_size=12,
                           max_batch_delay=2000).status_code == 200
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: server.post("/predictions/mlp_export_b12", json=x),
                                range(12)))
    assert all(a.status_code == 200 and a.json() == pytest.approx(want, abs=1e-5)
               for a in answers)


def test_a_model_that_does_not_export_is_refused_with_the_reason(built):
    store, src = built[0], built[1]
    path, cls = _module(src, "branchy", BRANCHY)
    torch.save(cls().state_dict(), src / "branchy.pth")
    write_archive(ArchiveSpec(model_name="branchy", serialized_file=str(src / "branchy.pth"),
                              model_file=str(path), export_path=str(store)))
    out = store / "branchy-fast.mar"
    done = optimize(str(store / "branchy.mar"), "-o", str(out), "--export",
                    "--input-shape", "4")
    assert done.returncode == 2
    assert "the model does not export with torch.export" in done.stderr, done.stderr[-2000:]
    assert "data-dependent" in done.stderr.lower() or "guard" in done.stderr.lower()
    assert not out.exists() and not list(store.glob(".branchy*"))
    nothing = optimize(str(store / "mlp.mar"), "-o", str(store / "x.mar"))
    assert nothing.returncode == 2 and "--export, --aot" in nothing.stderr


def test_a_torchscript_archive_is_converted(built):
    store, src = built[0], built[1]
    _, mlp_class = _module(src, "mlp", MLP)
    torch.manual_seed(0)
    torch.jit.script(mlp_class().eval()).save(str(src / "mlp_ts.pt"))
    write_archive(ArchiveSpec(model_name="mlp_ts", serialized_file=str(src / "mlp_ts.pt"),
                              export_path=str(store)))
    done = optimize(str(store / "mlp_ts.mar"), "-o", str(store / "mlp_ts_x.mar"), "--export",
                    "--input-shape", "16", "--rounds", "1", "--seconds", "0.2", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert "| torchscript |" in report["table"] and report["accuracy"]["max_abs_diff"] < 1e-5

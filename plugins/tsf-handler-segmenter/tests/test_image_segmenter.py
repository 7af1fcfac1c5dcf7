"""image_segmenter through a real server: LRASPP MobileNetV3 (random weights)."""

from __future__ import annotations

import io
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, random_image

MODEL_FILE = '''
    import torch
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    class Segmenter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                 num_classes=4)

        def forward(self, x):
            return self.net(x)
'''


def local_classes(model, data: bytes):
    """tsf's opt-in full-size segmentation: no resize or crop."""
    t = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    image = v2.functional.pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB"))
    with torch.no_grad():
        logits = model(t(image).unsqueeze(0))["out"][0]
    prob, classes = torch.softmax(logits, 0).max(0)
    return classes, prob


def torchserve_grid(model, data: bytes):
    """What TorchServe 0.12's image_segmenter computes: PIL resize 256, center crop 224,
    ToTensor, ImageNet normalisation; softmax over classes, top class and its probability."""
    from torchvision import transforms as T

    pil = Image.open(io.BytesIO(data)).convert("RGB")
    pil = pil.resize(_short_side(pil.size, 256), Image.BILINEAR)
    left, top = round((pil.width - 224) / 2.0), round((pil.height - 224) / 2.0)
    pil = pil.crop((left, top, left + 224, top + 224))
    tensor = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(T.ToTensor()(pil))
    with torch.no_grad():
        out = torch.softmax(model(tensor.unsqueeze(0))["out"], dim=1).max(dim=1)
    return torch.stack([out.indices.float(), out.values], dim=3)[0]


def _short_side(size, target):
    width, height = size
    if width <= height:
        return target, int(target * height / width)
    return int(target * width / height), target


def assert_close_grid(grid, expected):
    """Same grid up to resampling: PIL and tensor resizes differ by a grey level here and
    there, which can flip a near-tie pixel."""
    assert grid.shape == expected.shape
    same = grid[..., 0] == expected[..., 0]
    assert same.float().mean() > 0.99
    assert torch.allclose(grid[..., 1][same], expected[..., 1][same], atol=2e-2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    src = tmp_path_factory.mktemp("seg-src")
    store = tmp_path_factory.mktemp("seg-store")
    (src / "seg_model.py").write_text(textwrap.dedent(MODEL_FILE))
    namespace: dict = {}
    exec(textwrap.dedent(MODEL_FILE), namespace)
    torch.manual_seed(0)
    model = namespace["Segmenter"]().eval()
    torch.save(model.state_dict(), src / "seg.pth")
    torch.jit.script(model.net).save(str(src / "seg.pt"))
    (src / "cfg.yaml").write_text("batchSize: 2\nmaxBatchDelay: 300\n")
    (src / "full.yaml").write_text("handler:\n  resize: none\n  crop: none\n")
    write_archive(ArchiveSpec(model_name="seg_full", serialized_file=str(src / "seg.pt"),
                              handler="image_segmenter", config_file=str(src / "full.yaml"),
                              export_path=str(store)))
    write_archive(ArchiveSpec(model_name="seg_script", serialized_file=str(src / "seg.pt"),
                              handler="image_segmenter", config_file=str(src / "cfg.yaml"),
                              export_path=str(store)))
    write_archive(ArchiveSpec(model_name="seg_eager", serialized_file=str(src / "seg.pth"),
                              model_file=str(src / "seg_model.py"), handler="image_segmenter",
                              export_path=str(store)))
    server = ServerProcess(model_store=store)
    try:
        for name in ("seg_script", "seg_eager", "seg_full"):
            assert server.register(f"{name}.mar").status_code == 200
        yield server, model
    finally:
        server.stop()


@pytest.mark.parametrize("model_name", ["seg_script", "seg_eager"])
def test_per_pixel_class_and_probability_as_torchserve(setup, model_name):
    server, model = setup
    data = random_image("PNG", (64, 48), 1)
    r = server.post(f"/predictions/{model_name}", data=data)
    assert r.status_code == 200, r.text
    grid = torch.tensor(r.json())
    assert grid.shape == (224, 224, 2)  # TorchServe's resize 256 / crop 224
    expected = torchserve_grid(model, data)  # resized as TorchServe does, on the PIL image
    assert torch.equal(grid[..., 0], expected[..., 0])
    assert torch.allclose(grid[..., 1], expected[..., 1], atol=1e-5)
    assert ((grid[..., 1] > 0) & (grid[..., 1] <= 1)).all()


def test_full_size_grid_is_an_option(setup):
    server, model = setup
    data = random_image("PNG", (64, 48), 1)
    r = server.post("/predictions/seg_full", data=data)
    assert r.status_code == 200, r.text
    grid = torch.tensor(r.json())
    assert grid.shape == (48, 64, 2)
    classes, prob = local_classes(model, data)
    assert torch.equal(grid[..., 0].long(), classes)
    assert torch.allclose(grid[..., 1], prob, atol=1e-4)


def test_png_mask_on_accept_header(setup):
    server, model = setup
    data = random_image("PNG", (64, 48), 2)
    r = server.post("/predictions/seg_full", data=data, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    mask = Image.open(io.BytesIO(r.content))
    assert mask.size == (64, 48)
    classes, _ = local_classes(model, data)
    assert torch.equal(torch.from_numpy(np.array(mask)).long(), classes)
    r = server.post("/predictions/seg_script", data=data, headers={"Accept": "image/png"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (224, 224)


def test_batch_of_two(setup):
    server, _ = setup
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda s: server.post("/predictions/seg_script",
                                                        data=random_image("PNG", (64, 48), s)), (3, 4)))
    assert [r.status_code for r in responses] == [200, 200]
    assert all(torch.tensor(r.json()).shape == (224, 224, 2) for r in responses)

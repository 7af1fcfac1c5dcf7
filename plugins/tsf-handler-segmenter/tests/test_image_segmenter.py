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

from tsf.archiver import ArchiveSpec, write_archive
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
    t = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    image = v2.functional.pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB"))
    with torch.no_grad():
        logits = model(t(image).unsqueeze(0))["out"][0]
    prob, classes = torch.softmax(logits, 0).max(0)
    return classes, prob


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
    write_archive(ArchiveSpec(model_name="seg_script", serialized_file=str(src / "seg.pt"),
                              handler="image_segmenter", config_file=str(src / "cfg.yaml"),
                              export_path=str(store)))
    write_archive(ArchiveSpec(model_name="seg_eager", serialized_file=str(src / "seg.pth"),
                              model_file=str(src / "seg_model.py"), handler="image_segmenter",
                              export_path=str(store)))
    server = ServerProcess(model_store=store)
    try:
        for name in ("seg_script", "seg_eager"):
            assert server.register(f"{name}.mar").status_code == 200
        yield server, model
    finally:
        server.stop()


@pytest.mark.parametrize("model_name", ["seg_script", "seg_eager"])
def test_per_pixel_class_and_probability(setup, model_name):
    server, model = setup
    data = random_image("PNG", (64, 48), 1)
    r = server.post(f"/predictions/{model_name}", data=data)
    assert r.status_code == 200, r.text
    grid = torch.tensor(r.json())
    assert grid.shape == (48, 64, 2)
    classes, prob = local_classes(model, data)
    assert torch.equal(grid[..., 0].long(), classes)
    assert torch.allclose(grid[..., 1], prob, atol=1e-4)
    assert ((grid[..., 1] > 0) & (grid[..., 1] <= 1)).all()


def test_png_mask_on_accept_header(setup):
    server, model = setup
    data = random_image("PNG", (64, 48), 2)
    r = server.post("/predictions/seg_script", data=data, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    mask = Image.open(io.BytesIO(r.content))
    assert mask.size == (64, 48)
    classes, _ = local_classes(model, data)
    assert torch.equal(torch.from_numpy(np.array(mask)).long(), classes)


def test_batch_of_two(setup):
    server, _ = setup
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda s: server.post("/predictions/seg_script",
                                                        data=random_image("PNG", (64, 48), s)), (3, 4)))
    assert [r.status_code for r in responses] == [200, 200]
    assert all(torch.tensor(r.json()).shape == (48, 64, 2) for r in responses)

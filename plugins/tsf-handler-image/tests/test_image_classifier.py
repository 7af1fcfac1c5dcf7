"""image_classifier through a real server: resnet18 (random weights), TorchScript and eager."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.models.resnet import BasicBlock, ResNet

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error, random_image

CLASSES = 10
LABELS = {str(i): [f"n0{i}", f"class_{i}"] for i in range(CLASSES - 1)}  # last index unmapped
EAGER = '''
    from torchvision.models.resnet import BasicBlock, ResNet

    class ResNet18(ResNet):
        def __init__(self):
            super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=10)
'''


def resnet18() -> ResNet:
    torch.manual_seed(1)
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=CLASSES).eval()


def expected_top(model, data: bytes, resize: int, crop: int) -> list[str]:
    from torchvision.transforms import v2

    t = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop),
                    v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    image = v2.functional.pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB"))
    with torch.no_grad():
        probs = torch.softmax(model(t(image).unsqueeze(0)), 1)[0]
    return [f"class_{i}" if i < CLASSES - 1 else str(i)
            for i in probs.argsort(descending=True).tolist()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    src = tmp_path_factory.mktemp("img-src")
    store = tmp_path_factory.mktemp("img-store")
    model = resnet18()
    torch.jit.script(model).save(str(src / "resnet18.pt"))
    torch.save(model.state_dict(), src / "resnet18.pth")
    (src / "resnet18_model.py").write_text(textwrap.dedent(EAGER))
    (src / "index_to_name.json").write_text(json.dumps(LABELS))
    (src / "small.yaml").write_text("batchSize: 4\nmaxBatchDelay: 300\n"
                                    "handler:\n  topk: 3\n  resize: 72\n  crop: 64\n")
    (src / "tiny-limit.yaml").write_text("handler:\n  max_image_pixels: 1000\n")
    common = dict(handler="image_classifier", extra_files=str(src / "index_to_name.json"),
                  export_path=str(store))
    write_archive(ArchiveSpec(model_name="rn_script", serialized_file=str(src / "resnet18.pt"),
                              **common))
    write_archive(ArchiveSpec(model_name="rn_eager", serialized_file=str(src / "resnet18.pth"),
                              model_file=str(src / "resnet18_model.py"),
                              config_file=str(src / "small.yaml"), **common))
    write_archive(ArchiveSpec(model_name="rn_limited", serialized_file=str(src / "resnet18.pt"),
                              config_file=str(src / "tiny-limit.yaml"), **common))
    return store, src, model


@pytest.fixture(scope="module")
def server(store):
    server = ServerProcess(model_store=store[0], models=["all"])
    import time

    deadline = time.monotonic() + 120
    while server.get("/ping").status_code != 200 or \
            len(server.manage("GET", "/models").json()["models"]) < 3:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    yield server
    server.stop()


def test_jpeg_png_and_base64_give_topk_labels(server, store):
    model = store[2]
    jpeg = random_image("JPEG")
    r = server.post("/predictions/rn_script", data=jpeg)
    assert r.status_code == 200, r.text
    result = r.json()
    assert list(result)[:5] == expected_top(model, jpeg, 256, 224)[:5]
    probs = list(result.values())
    assert len(result) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001

    png = random_image("PNG", seed=3)
    as_form = server.post("/predictions/rn_script", files={"data": ("x.png", png, "image/png")})
    as_b64 = server.post("/predictions/rn_script",
                         json={"data": base64.b64encode(png).decode()})
    assert as_form.status_code == 200 and as_b64.status_code == 200
    assert as_form.json() == pytest.approx(as_b64.json())
    assert list(as_form.json()) == expected_top(model, png, 256, 224)[:5]


def test_eager_archive_batches_with_configured_transforms(server, store):
    model = store[2]
    images = [random_image("JPEG", size=(90 + 7 * i, 70), seed=i) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda b: server.post("/predictions/rn_eager", data=b), images))
    for data, response in zip(images, responses):
        assert response.status_code == 200, response.text
        assert list(response.json()) == expected_top(model, data, 72, 64)[:3]
    text = server.scrape()
    line = next(l for l in text.splitlines()
                if l.startswith('tsf_batch_size_sum{model_name="rn_eager"'))
    assert float(line.split()[-1]) == 4


def test_nested_list_input(server):
    tensor = torch.rand(3, 32, 32).tolist()
    r = server.post("/predictions/rn_script", json={"data": tensor})
    assert r.status_code == 200, r.text
    assert len(r.json()) == 5


def test_not_an_image_is_400_naming_the_request(server):
    r = server.post("/predictions/rn_script", data=b"definitely not a picture",
                    headers={"X-Request-Id": "img-7"})
    assert_error(r, 400, "BadRequestException", "img-7")
    assert "not an image" in r.json()["message"]
    assert server.post("/predictions/rn_script", data=random_image("PNG")).status_code == 200


def test_decompression_bomb_limit_is_enforced(server):
    r = server.post("/predictions/rn_limited", data=random_image("PNG", size=(100, 100)))
    assert_error(r, 400, "BadRequestException", "too large")


def test_torch_model_archiver_mar_with_image_classifier(store, tmp_path):
    archiver = shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent))
    src = store[1]
    subprocess.run([archiver, "--model-name", "tma_img", "--version", "1.0",
                    "--serialized-file", str(src / "resnet18.pt"), "--handler",
                    "image_classifier", "--extra-files", str(src / "index_to_name.json"),
                    "--export-path", str(tmp_path)], check=True)
    server = ServerProcess(model_store=tmp_path)
    try:
        assert server.register("tma_img.mar").status_code == 200
        jpeg = random_image("JPEG", seed=5)
        r = server.post("/predictions/tma_img", data=jpeg)
        assert r.status_code == 200, r.text
        assert list(r.json()) == expected_top(store[2], jpeg, 256, 224)[:5]
    finally:
        server.stop()

"""object_detector through a real server: Faster R-CNN (random weights), eager and TorchScript."""

from __future__ import annotations

import io
import json
import textwrap

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from tsf.archiver import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error, random_image

MODEL_FILE = '''
    import torch
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = fasterrcnn_mobilenet_v3_large_320_fpn(
                weights=None, weights_backbone=None, num_classes=5, box_score_thresh=0.0)

        def forward(self, images):
            return self.net(images)
'''
LABELS = {"1": "cat", "2": "dog", "3": "car", "4": "person"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    src = tmp_path_factory.mktemp("det-src")
    store = tmp_path_factory.mktemp("det-store")
    (src / "detector_model.py").write_text(textwrap.dedent(MODEL_FILE))
    namespace: dict = {}
    exec(textwrap.dedent(MODEL_FILE), namespace)
    torch.manual_seed(0)
    model = namespace["Detector"]().eval()
    torch.save(model.state_dict(), src / "det.pth")
    torch.jit.script(model.net).save(str(src / "det.pt"))
    (src / "index_to_name.json").write_text(json.dumps(LABELS))
    (src / "low.yaml").write_text("batchSize: 2\nmaxBatchDelay: 300\nhandler:\n  threshold: 0.0\n")
    (src / "high.yaml").write_text("handler:\n  threshold: 0.999\n")
    common = dict(handler="object_detector", extra_files=str(src / "index_to_name.json"),
                  export_path=str(store))
    write_archive(ArchiveSpec(model_name="det_eager", serialized_file=str(src / "det.pth"),
                              model_file=str(src / "detector_model.py"),
                              config_file=str(src / "low.yaml"), **common))
    write_archive(ArchiveSpec(model_name="det_script", serialized_file=str(src / "det.pt"),
                              config_file=str(src / "low.yaml"), **common))
    write_archive(ArchiveSpec(model_name="det_strict", serialized_file=str(src / "det.pt"),
                              config_file=str(src / "high.yaml"), **common))
    server = ServerProcess(model_store=store)
    try:
        for name in ("det_eager", "det_script", "det_strict"):
            r = server.register(f"{name}.mar")
            assert r.status_code == 200, r.text
        yield server, model
    finally:
        server.stop()


def expected(model, data: bytes) -> list:
    image = F.to_dtype(F.pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB")),
                       torch.float32, scale=True)
    with torch.no_grad():
        return model([image])[0]["scores"].tolist()


@pytest.mark.parametrize("model_name", ["det_eager", "det_script"])
def test_boxes_labels_and_scores(setup, model_name):
    server, model = setup
    data = random_image("JPEG", (160, 120), 1)
    r = server.post(f"/predictions/{model_name}", data=data)
    assert r.status_code == 200, r.text
    boxes = r.json()
    assert isinstance(boxes, list) and boxes, "random weights with threshold 0 still give boxes"
    scores = expected(model, data)
    assert len(boxes) == len(scores)
    for found, score in zip(boxes, scores):
        assert set(found) - {"score"} <= set(LABELS.values())
        (label, box), = [(k, v) for k, v in found.items() if k != "score"]
        assert len(box) == 4 and box[0] <= box[2] and box[1] <= box[3]
        assert 0 <= box[2] <= 160 and 0 <= box[3] <= 120
        assert found["score"] == pytest.approx(score, abs=1e-3)


def test_threshold_filters(setup):
    server, _ = setup
    r = server.post("/predictions/det_strict", data=random_image("JPEG", (160, 120), 2))
    assert r.status_code == 200 and r.json() == []


def test_images_of_different_sizes_in_one_batch(setup):
    from concurrent.futures import ThreadPoolExecutor

    server, _ = setup
    pictures = [random_image("JPEG", (160, 120), 3), random_image("JPEG", (96, 128), 4)]
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda d: server.post("/predictions/det_eager", data=d),
                                  pictures))
    assert [r.status_code for r in responses] == [200, 200]
    assert all(b[2] <= 96 for f in responses[1].json() for k, b in f.items() if k != "score")


def test_not_an_image(setup):
    server, _ = setup
    assert_error(server.post("/predictions/det_eager", data=b"\x89PNG broken"), 400,
                 "BadRequestException", "not an image")

"""object_detector through a real server: Faster R-CNN (random weights), eager and TorchScript."""

from __future__ import annotations

import io
import json
import textwrap

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from tsf.archives.writer import ArchiveSpec, write_archive
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
    (src / "rounded.yaml").write_text("handler:\n  threshold: 0.0\n  box_decimals: 2\n")
    common = dict(handler="object_detector", extra_files=str(src / "index_to_name.json"),
                  export_path=str(store))
    write_archive(ArchiveSpec(model_name="det_eager", serialized_file=str(src / "det.pth"),
                              model_file=str(src / "detector_model.py"),
                              config_file=str(src / "low.yaml"), **common))
    write_archive(ArchiveSpec(model_name="det_script", serialized_file=str(src / "det.pt"),
                              config_file=str(src / "low.yaml"), **common))
    write_archive(ArchiveSpec(model_name="det_strict", serialized_file=str(src / "det.pt"),
                              config_file=str(src / "high.yaml"), **common))
    write_archive(ArchiveSpec(model_name="det_rounded", serialized_file=str(src / "det.pt"),
                              config_file=str(src / "rounded.yaml"), **common))
    server = ServerProcess(model_store=store)
    try:
        for name in ("det_eager", "det_script", "det_strict", "det_rounded"):
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


def torchserve_answer(model, data: bytes, threshold: float) -> list:
    """TorchServe 0.12's object_detector: boxes and scores with score >= threshold, as the
    tensors' ``tolist()`` gives them (no rounding), keyed by index_to_name.json's label."""
    from torchvision import transforms as T

    image = T.ToTensor()(Image.open(io.BytesIO(data)))
    with torch.no_grad():
        row = model([image])[0]
    keep = row["scores"] >= threshold
    return [{LABELS[str(label)]: box, "score": score}
            for box, label, score in zip(row["boxes"][keep].tolist(),
                                         row["labels"][keep].tolist(),
                                         row["scores"][keep].tolist())]


def _pairs(answer: list) -> list:
    return [(next(k for k in found if k != "score"),
             next(v for k, v in found.items() if k != "score"), found["score"])
            for found in answer]


def test_boxes_are_not_rounded_as_in_torchserve(setup):
    server, model = setup
    data = random_image("JPEG", (160, 120), 5)
    r = server.post("/predictions/det_script", data=data)
    assert r.status_code == 200, r.text
    got, want = _pairs(r.json()), _pairs(torchserve_answer(model, data, 0.0))
    assert len(got) == len(want) and got
    for (label, box, score), (label2, box2, score2) in zip(got, want):
        assert label == label2
        assert box == pytest.approx(box2, abs=1e-3) and score == pytest.approx(score2, abs=1e-4)
    values = [v for _, box, _ in got for v in box]
    assert any(v != round(v, 2) for v in values)  # full float precision, as TorchServe


def test_box_decimals_rounds_on_request(setup):
    server, _ = setup
    data = random_image("JPEG", (160, 120), 5)
    answer = server.post("/predictions/det_rounded", data=data).json()
    values = [v for _, box, _ in _pairs(answer) for v in box]
    assert values and all(v == round(v, 2) for v in values)
    assert any(v != round(v, 1) for v in values)


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

"""Explanations of image models through a real server: classifier, segmenter, detector."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error, random_image

CLASSIFIER = '''
    import torch

    class SmallNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1))
            self.fc = torch.nn.Linear(16, 5)

        def forward(self, x):
            return self.fc(self.features(x).flatten(1))
'''
SEGMENTER = '''
    import torch

    class TinySegmenter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                                            torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))

        def forward(self, x):
            return {"out": self.body(x)}
'''
DETECTOR = '''
    import torch
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = fasterrcnn_mobilenet_v3_large_320_fpn(
                weights=None, weights_backbone=None, num_classes=3, box_score_thresh=0.0)

        def forward(self, images):
            return self.net(images)
'''
OWN_EXPLAINER = '''
    from tsf_handler_image.classifier import ImageClassifier

    class ExplainedByHand(ImageClassifier):
        def tsf_explain(self, context, requests):
            return [{"explained_by": "the handler"} for _ in requests]
'''
LABELS = {"0": "apple", "1": "banana", "2": "cherry", "3": "date", "4": "elderberry"}
CLASSIFIER_CONFIG = """
batchSize: 4
maxBatchDelay: 200
handler:
  resize: 72
  crop: 64
explain:
  n_steps: 8
"""


def build(path, name: str):
    """The model class from its file (a real file, so TorchScript can read the source)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return getattr(module, name)().eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    src = tmp_path_factory.mktemp("explain-src")
    store = tmp_path_factory.mktemp("explain-store")
    (src / "index_to_name.json").write_text(json.dumps(LABELS))
    (src / "classifier.yaml").write_text(CLASSIFIER_CONFIG)
    (src / "small.yaml").write_text("explain:\n  n_steps: 4\nhandler:\n  threshold: 0.0\n")
    # the segmenter at the picture's own size (its default is TorchServe's 224 x 224 crop)
    (src / "seg.yaml").write_text("explain:\n  n_steps: 4\nhandler:\n  resize: none\n"
                                  "  crop: none\n")
    models = {}
    for name, source, cls in (("small", CLASSIFIER, "SmallNet"),
                              ("seg", SEGMENTER, "TinySegmenter"),
                              ("det", DETECTOR, "Detector")):
        (src / f"{name}_model.py").write_text(textwrap.dedent(source))
        models[name] = build(src / f"{name}_model.py", cls)
        torch.save(models[name].state_dict(), src / f"{name}.pth")
    torch.jit.script(models["small"]).save(str(src / "small.pt"))
    (src / "own_handler.py").write_text(textwrap.dedent(OWN_EXPLAINER))
    labels = str(src / "index_to_name.json")
    archives = [
        dict(model_name="small", serialized_file=str(src / "small.pth"),
             model_file=str(src / "small_model.py"), handler="image_classifier",
             config_file=str(src / "classifier.yaml")),
        dict(model_name="small_script", serialized_file=str(src / "small.pt"),
             handler="image_classifier", config_file=str(src / "classifier.yaml")),
        dict(model_name="seg", serialized_file=str(src / "seg.pth"),
             model_file=str(src / "seg_model.py"), handler="image_segmenter",
             config_file=str(src / "seg.yaml")),
        dict(model_name="det", serialized_file=str(src / "det.pth"),
             model_file=str(src / "det_model.py"), handler="object_detector",
             config_file=str(src / "small.yaml")),
        dict(model_name="own", serialized_file=str(src / "small.pth"),
             model_file=str(src / "small_model.py"), handler=str(src / "own_handler.py"),
             config_file=str(src / "classifier.yaml")),
    ]
    for spec in archives:
        write_archive(ArchiveSpec(extra_files=labels, export_path=str(store), **spec))
    server = ServerProcess(model_store=store)
    try:
        for spec in archives:
            r = server.register(f"{spec['model_name']}.mar")
            assert r.status_code == 200, r.text
        yield server, models, store
    finally:
        server.stop()


def model_input(data: bytes) -> torch.Tensor:
    transform = v2.Compose([v2.Resize(72, antialias=True), v2.CenterCrop(64),
                            v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return transform(v2.functional.pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB")))


def assert_useful(attributions: torch.Tensor) -> None:
    assert torch.isfinite(attributions).all()
    assert attributions.abs().sum() > 0


@pytest.mark.parametrize("model_name", ["small", "small_script"])
def test_classifier_attributions_explain_the_predicted_class(setup, model_name):
    server, models, _ = setup
    data = random_image("JPEG", (96, 80), 3)
    r = server.post(f"/explanations/{model_name}", data=data)
    assert r.status_code == 200, r.text
    attributions = torch.tensor(r.json())
    assert attributions.shape == (3, 64, 64)  # TorchServe's answer: the model input's shape
    assert_useful(attributions)
    with torch.no_grad():
        predicted = int(models["small"](model_input(data).unsqueeze(0))[0].argmax())
    assert r.headers["X-Explanation-Target"] == str(predicted)


def test_attributions_add_up_to_the_score_difference(setup):
    """Integrated Gradients' completeness: sum(attr) = F(x)[t] - F(0)[t], up to the quadrature."""
    server, models, _ = setup
    data = random_image("PNG", (64, 64), 5)
    r = server.post("/explanations/small?target=banana&n_steps=64", data=data)
    assert r.status_code == 200, r.text
    assert r.headers["X-Explanation-Target"] == "1"
    x = model_input(data).unsqueeze(0)
    with torch.no_grad():
        gap = float(models["small"](x)[0, 1] - models["small"](torch.zeros_like(x))[0, 1])
    total = float(torch.tensor(r.json()).sum())
    assert math.isclose(total, gap, rel_tol=0.05, abs_tol=1e-3), (total, gap)


def test_png_heatmap_has_the_input_size(setup):
    server, _, _ = setup
    data = random_image("JPEG", (123, 77), 4)
    for kwargs in ({"params": {"format": "png"}}, {"headers": {"Accept": "image/png"}}):
        r = server.post("/explanations/small", data=data, **kwargs)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "image/png"
        picture = Image.open(io.BytesIO(r.content))
        assert picture.format == "PNG" and picture.size == (123, 77)
        original = Image.open(io.BytesIO(data)).convert("RGB")
        assert not np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(original))


def test_explanations_are_batched_and_counted(setup):
    server, _, _ = setup
    images = [random_image("JPEG", (80, 80), seed) for seed in range(4)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda d: server.post("/explanations/small", data=d), images))
    assert [r.status_code for r in responses] == [200] * 4
    metrics = server.scrape()
    assert ('tsf_requests_total{code="200",kind="explain",model_name="small",'
            'model_version="1.0"}') in metrics
    assert 'tsf_stage_duration_seconds_count{model_name="small",model_version="1.0",' \
           'stage="explain"}' in metrics
    line = next(l for l in metrics.splitlines()
                if l.startswith('tsf_batch_size_count{model_name="small"'))
    assert float(line.split()[-1]) < 4 + 2  # some explanations shared a batch


def test_target_and_steps_are_checked(setup):
    server, _, _ = setup
    data = random_image("JPEG", (64, 64), 1)
    r = server.post("/explanations/small?target=durian", data=data,
                    headers={"X-Request-Id": "x-1"})
    assert_error(r, 400, "BadRequestException", "target 'durian' is not a class")
    r = server.post("/explanations/small?n_steps=100000", data=data)
    assert_error(r, 400, "BadRequestException", "n_steps must be between 1 and 256")
    assert_error(server.post("/explanations/small", data=b"not an image"), 400,
                 "BadRequestException", "not an image")
    assert server.post("/explanations/small", data=data).status_code == 200


def test_kserve_v1_explain_and_predict(setup):
    server, _, _ = setup
    image = base64.b64encode(random_image("JPEG", (64, 64), 2)).decode()
    r = server.post("/v1/models/small:explain",
                    json={"instances": [{"data": image, "target": "cherry"}, {"data": image}]})
    assert r.status_code == 200, r.text
    explanations = r.json()["explanations"]
    assert len(explanations) == 2
    assert torch.tensor(explanations[0]).shape == (3, 64, 64)
    r = server.post("/v1/models/small:predict", json={"instances": [{"data": image}]})
    assert r.status_code == 200, r.text
    assert set(r.json()["predictions"][0]) <= set(LABELS.values())
    card = server.get("/v1/models/small").json()  # KServe's readiness beside OpenAI's model card
    assert (card["name"], card["ready"]) == ("small", True)
    assert_error(server.post("/v1/models/small:explain", json={"rows": []}), 400,
                 "BadRequestException", "instances")
    assert_error(server.post("/v1/models/nope:explain", json={"instances": [1]}), 404,
                 "ModelNotFoundException", "nope")


def test_segmenter_explains_a_class_region(setup):
    server, models, _ = setup
    data = random_image("PNG", (48, 40), 6)
    r = server.post("/explanations/seg", data=data)
    assert r.status_code == 200, r.text
    attributions = torch.tensor(r.json())
    assert attributions.shape == (3, 40, 48)
    assert_useful(attributions)
    r = server.post("/explanations/seg?target=2&format=png", data=data)
    assert r.status_code == 200, r.text
    assert r.headers["X-Explanation-Target"] == "2"
    assert Image.open(io.BytesIO(r.content)).size == (48, 40)


def test_detector_explains_a_chosen_box(setup):
    server, _, _ = setup
    data = random_image("JPEG", (96, 72), 7)
    boxes = server.post("/predictions/det", data=data).json()
    assert len(boxes) >= 2
    r = server.post("/explanations/det?target=1", data=data)
    assert r.status_code == 200, r.text
    assert r.headers["X-Explanation-Target"] == "1"
    assert r.headers["X-Explanation-Label"] in LABELS.values()
    attributions = torch.tensor(r.json())
    assert attributions.shape == (3, 72, 96)
    assert torch.isfinite(attributions).all()
    r = server.post(f"/explanations/det?target={len(boxes)}", data=data)
    assert_error(r, 400, "BadRequestException", "is not a box of the prediction")


def test_a_handler_own_explain_wins(setup):
    server, _, _ = setup
    r = server.post("/explanations/own", data=random_image("JPEG", (64, 64), 1))
    assert r.status_code == 200, r.text
    assert r.json() == {"explained_by": "the handler"}


def test_without_the_plugin_explanations_answer_501(setup):
    _, _, store = setup
    server = ServerProcess(model_store=store, env={"TSF_DISABLE_PLUGINS": "captum"})
    try:
        assert server.register("small.mar").status_code == 200
        r = server.post("/explanations/small", data=random_image("JPEG", (64, 64), 1))
        assert_error(r, 501, None, "pip install tsf-explain-captum")
        assert server.post("/predictions/small",
                           data=random_image("JPEG", (64, 64), 1)).status_code == 200
    finally:
        server.stop()

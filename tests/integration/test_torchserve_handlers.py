"""TorchServe-style handlers that import ``ts`` (tsf-ts-compat), archived with the real
``torch-model-archiver`` CLI and served by a real tsf server with only tsf installed."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms

from tsf.testing import ServerProcess, assert_error, random_image

pytestmark = pytest.mark.slow

MNIST_MODEL = '''
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 26 * 26, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))
'''
MNIST_HANDLER = '''
    from torchvision import transforms
    from ts.torch_handler.image_classifier import ImageClassifier

    class MNISTDigitClassifier(ImageClassifier):
        image_processing = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

        def postprocess(self, data):
            return data.argmax(1).tolist()

        def get_insights(self, tensor_data, _, target=0):
            inputs = tensor_data.clone().requires_grad_(True)
            self.model(inputs)[:, int(target)].sum().backward()
            return (inputs.grad * inputs).tolist()
'''
TOP3_HANDLER = '''
    from ts.torch_handler.image_classifier import ImageClassifier

    class Top3(ImageClassifier):
        topk = 3
'''
REGRESSOR_MODEL = '''
    from torch import nn

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x)
'''
REGRESSOR_HANDLER = '''
    import os
    import torch
    from ts.torch_handler.base_handler import BaseHandler

    class RegressorHandler(BaseHandler):
        def preprocess(self, data):
            return torch.tensor([row.get("data") or row.get("body") for row in data],
                                dtype=torch.float32)

        def describe_handle(self):
            return {"model": type(self.model).__name__, "device": str(self.device),
                    "map_location": self.map_location, "initialized": self.initialized,
                    "serialized": self.manifest["model"]["serializedFile"],
                    "pt_path_exists": os.path.isfile(self.model_pt_path),
                    "mapping": self.mapping, "yaml": self.model_yaml_config}
'''
METRICS_HANDLER = '''
    import os
    import torch
    from ts.metrics.dimension import Dimension
    from ts.metrics.metric_type_enum import MetricTypes
    from ts.torch_handler.base_handler import BaseHandler

    class MetricsHandler(BaseHandler):
        def initialize(self, context):
            super().initialize(context)
            self.rows = context.metrics.add_metric_to_cache(
                "ts_rows", unit="count", dimension_names=["color"],
                metric_type=MetricTypes.COUNTER)

        def preprocess(self, data):
            return torch.tensor([row.get("data") or row.get("body") for row in data],
                                dtype=torch.float32)

        def postprocess(self, data):
            ctx, out = self.context, []
            for i, row in enumerate(data.tolist()):
                color = ctx.request_processor[i].get_request_property("X-Color") or "none"
                dims = [Dimension("color", color)]
                self.rows.add_or_update(1, [color])
                ctx.metrics.get_metric("ts_rows", MetricTypes.COUNTER).add_or_update(2, [color])
                ctx.metrics.add_counter("ts_requests", 1, None, dims)
                ctx.metrics.add_size("ts_payload", 1.5, None, "MB", dims)
                ctx.metrics.add_percent("ts_share", 50.0, None, dims)
                ctx.metrics.add_metric("ts_latency", 0.25, "ms", None, dims,
                                       MetricTypes.HISTOGRAM)
                # declared in the server's metrics_config (TorchServe's metrics.yaml) only
                ctx.metrics.get_metric("ts_declared", MetricTypes.GAUGE).add_or_update(
                    7, [color, "model"])
                ctx.request_processor[i].report_status(201, "Made")
                props = ctx.system_properties
                out.append({"row": row, "header": ctx.get_request_header(i, "x-color"),
                            "status": list(ctx.get_response_status(i)),
                            "props": sorted(props), "batch_size": props["batch_size"],
                            "gpu_id": props["gpu_id"],
                            "model_dir_ok": os.path.isfile(
                                os.path.join(props["model_dir"], "MAR-INF", "MANIFEST.json")),
                            "yaml": ctx.model_yaml_config.get("handler")})
            return out
'''
# a helper class with handle beside a module-level handle: TorchServe calls the function
ERRORS_HANDLER = '''
    from ts.utils.util import PredictionException

    class Helper:
        def initialize(self, context):
            pass

        def handle(self, data, context):
            return ["the class answered"] * len(data)

    def handle(data, context):
        if data is None:
            return None
        out = []
        for row in data:
            body = row.get("data") or row.get("body")
            body = body.decode() if isinstance(body, (bytes, bytearray)) else body
            if body == "teapot":
                raise PredictionException("I am a teapot, not a model", 418)
            if body == "odd-code":
                raise PredictionException("an odd code", 42)
            if body == "oom":
                raise MemoryError("pretend the host ran out")
            if body == "cuda-oom":
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            out.append(f"the function answered {body}")
        return out
'''
TEXT_MODEL = '''
    from torch import nn

    class TextSentiment(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.EmbeddingBag(16, 8)
            self.fc = nn.Linear(8, 3)

        def forward(self, text, offsets):
            return self.fc(self.embedding(text, offsets))
'''
TEXT_HANDLER = '''
    from ts.torch_handler.text_classifier import TextClassifier

    class NewsClassifier(TextClassifier):
        pass
'''
SEGMENTER_HANDLER = '''
    from ts.torch_handler.image_segmenter import ImageSegmenter

    class Segmenter(ImageSegmenter):
        pass
'''
DETECTOR_MODEL = '''
    import torch
    from torch import nn

    class Detector(nn.Module):
        """Two boxes per image; the first scores above TorchServe's 0.5 threshold."""

        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(10.0))

        def forward(self, images):
            out = []
            for image in images:
                m = float(image.mean())
                out.append({"boxes": torch.tensor([[1.0, 2.0, 3.0 + m, 4.0], [0, 0, 1, 1]]) *
                                     self.scale,
                            "labels": torch.tensor([1, 2]),
                            "scores": torch.tensor([0.9, 0.1])})
            return out
'''
DETECTOR_HANDLER = '''
    from ts.torch_handler.object_detector import ObjectDetector

    class Boxes(ObjectDetector):
        pass
'''
VOCAB = {"<unk>": 0, "hello": 1, "world": 2, "do": 3, "not": 4, "panic": 5, "hello world": 6,
         "world do": 7, "do not": 8, "not panic": 9}
TEXT_TOKENS = ["hello", "world", "do", "not", "panic"]


class TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 6)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


class TinySegmenter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x)}


def _load(source: str, name: str):
    namespace: dict = {}
    exec(textwrap.dedent(source), namespace)
    return namespace[name]


def _archive(tmp: Path, store: Path, name: str, handler: str, serialized: Path,
             model_file: Path | None = None, extra: list[Path] = (),
             config: str | None = None) -> None:
    archiver = shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent))
    handler_path = tmp / f"{name}_handler.py"
    handler_path.write_text(textwrap.dedent(handler))
    cmd = [archiver, "--model-name", name, "--version", "1.0", "--serialized-file",
           str(serialized), "--handler", str(handler_path), "--export-path", str(store)]
    if model_file is not None:
        cmd += ["--model-file", str(model_file)]
    if extra:
        cmd += ["--extra-files", ",".join(str(p) for p in extra)]
    if config is not None:
        config_path = tmp / f"{name}-config.yaml"
        config_path.write_text(textwrap.dedent(config))
        cmd += ["--config-file", str(config_path)]
    subprocess.run(cmd, check=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    src = tmp_path_factory.mktemp("ts-src")
    store = tmp_path_factory.mktemp("ts-store")
    torch.manual_seed(0)
    built: dict = {}

    (src / "mnist_model.py").write_text(textwrap.dedent(MNIST_MODEL))
    mnist = _load(MNIST_MODEL, "Net")().eval()
    torch.save(mnist.state_dict(), src / "mnist.pt")
    _archive(src, store, "mnist", MNIST_HANDLER, src / "mnist.pt", src / "mnist_model.py")
    built["mnist"] = mnist

    tiny = TinyClassifier().eval()
    torch.jit.script(tiny).save(str(src / "tiny.pt"))
    labels = {str(i): [f"n0{i}", f"class_{i}"] for i in range(6)}
    (src / "index_to_name.json").write_text(json.dumps(labels))
    _archive(src, store, "top3", TOP3_HANDLER, src / "tiny.pt",
             extra=[src / "index_to_name.json"])
    built["top3"] = tiny

    (src / "regressor_model.py").write_text(textwrap.dedent(REGRESSOR_MODEL))
    regressor = _load(REGRESSOR_MODEL, "Regressor")().eval()
    torch.save(regressor.state_dict(), src / "regressor.pth")
    reg_labels = src / "labels" / "index_to_name.json"
    reg_labels.parent.mkdir()
    reg_labels.write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    common = dict(serialized=src / "regressor.pth", model_file=src / "regressor_model.py")
    _archive(src, store, "regressor", REGRESSOR_HANDLER, extra=[reg_labels], **common)
    _archive(src, store, "compiled", REGRESSOR_HANDLER, **common,
             config="pt2:\n  compile:\n    enable: true\n    backend: eager\n")
    built["regressor"] = regressor

    torch.jit.trace(regressor, torch.zeros(1, 4)).save(str(src / "regressor_script.pt"))
    _archive(src, store, "metrics", METRICS_HANDLER, src / "regressor_script.pt",
             config="batchSize: 1\nhandler:\n  colour: teal\n")

    _archive(src, store, "errors", ERRORS_HANDLER, src / "regressor_script.pt")

    (src / "text_model.py").write_text(textwrap.dedent(TEXT_MODEL))
    text = _load(TEXT_MODEL, "TextSentiment")().eval()
    torch.save(text.state_dict(), src / "text.pt")
    torch.save(VOCAB, src / "source_vocab.pt")
    text_labels = src / "text-labels" / "index_to_name.json"
    text_labels.parent.mkdir()
    text_labels.write_text(json.dumps({"0": "World", "1": "Sports", "2": "Business"}))
    _archive(src, store, "text", TEXT_HANDLER, src / "text.pt", src / "text_model.py",
             extra=[src / "source_vocab.pt", text_labels])
    built["text"] = text

    segmenter = TinySegmenter().eval()
    torch.jit.script(segmenter).save(str(src / "segmenter.pt"))
    _archive(src, store, "segmenter", SEGMENTER_HANDLER, src / "segmenter.pt")
    built["segmenter"] = segmenter

    (src / "detector_model.py").write_text(textwrap.dedent(DETECTOR_MODEL))
    detector = _load(DETECTOR_MODEL, "Detector")().eval()
    torch.save(detector.state_dict(), src / "detector.pt")
    det_labels = src / "det-labels" / "index_to_name.json"
    det_labels.parent.mkdir()
    det_labels.write_text(json.dumps({"1": "person", "2": "bicycle"}))
    _archive(src, store, "detector", DETECTOR_HANDLER, src / "detector.pt",
             src / "detector_model.py", extra=[det_labels])
    built["detector"] = detector
    return store, built


@pytest.fixture(scope="module")
def server(models):
    store = models[0]
    names = sorted(p.stem for p in store.glob("*.mar"))
    metrics_yaml = store.parent / "ts-metrics.yaml"
    metrics_yaml.write_text(textwrap.dedent("""
        dimensions:
          - &level "Level"
        model_metrics:
          gauge:
            - name: ts_declared
              unit: count
              dimensions: ["color", *level]
    """))
    server = ServerProcess(model_store=store, models=["all"], ready_timeout=120,
                           config={"metrics_config": str(metrics_yaml)})
    deadline = time.monotonic() + 300
    try:
        while True:
            listed = server.manage("GET", "/models").json()["models"]
            ready = [m["modelName"] for m in listed
                     if server.get(f"/v1/models/{m['modelName']}").json().get("ready")]
            if sorted(ready) == names:
                break
            assert time.monotonic() < deadline, f"ready: {ready}\n{server.log()}"
            time.sleep(0.5)
        yield server
    finally:
        server.stop()


def _digit_png(seed: int) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(28, 28, generator=gen) * 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


MNIST_TRANSFORM = transforms.Compose([transforms.ToTensor(),
                                      transforms.Normalize((0.1307,), (0.3081,))])


def test_mnist_image_classifier_subclass_with_eager_model(server, models):
    net = models[1]["mnist"]
    for seed in range(3):
        png = _digit_png(seed)
        r = server.post("/predictions/mnist", data=png)
        assert r.status_code == 200, r.text
        expected = net(MNIST_TRANSFORM(Image.open(io.BytesIO(png))).unsqueeze(0)).argmax(1)
        assert r.json() == int(expected[0])


def test_explanations_run_explain_handle(server, models):
    net = models[1]["mnist"]
    png = _digit_png(7)
    r = server.post("/explanations/mnist", data=png)
    assert r.status_code == 200, r.text
    inputs = MNIST_TRANSFORM(Image.open(io.BytesIO(png))).unsqueeze(0).requires_grad_(True)
    net(inputs)[:, 0].sum().backward()
    expected = (inputs.grad * inputs)[0].detach()
    assert torch.tensor(r.json()) == pytest.approx(expected, abs=1e-5)

    # KServe v1 :explain with an already-transformed tensor as the instance
    tensor = MNIST_TRANSFORM(Image.open(io.BytesIO(png))).tolist()
    r = server.post("/v1/models/mnist:explain", json={"instances": [tensor]})
    assert r.status_code == 200, r.text
    assert torch.tensor(r.json()["explanations"][0]) == pytest.approx(expected, abs=1e-5)


def test_text_classifier_explanations_use_captum(server):
    pytest.importorskip("captum")
    r = server.post("/explanations/text", data="Hello, world!")
    assert r.status_code == 200, r.text
    assert r.json()["words"] == ["hello", "world"]
    assert len(r.json()["importances"]) == 1


def test_explain_without_get_insights_is_501(server):
    r = server.post("/explanations/regressor", json=[1, 2, 3, 4])
    assert_error(r, 501, None, "does not implement get_insights")


def test_image_classifier_subclass_with_torchscript_and_mapping(server, models):
    tiny = models[1]["top3"]
    jpeg = random_image("JPEG", size=(300, 260), seed=4)
    r = server.post("/predictions/top3", data=jpeg)
    assert r.status_code == 200, r.text
    t = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                            transforms.ToTensor(),
                            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        probs = torch.softmax(tiny(t(Image.open(io.BytesIO(jpeg)).convert("RGB"))
                                   .unsqueeze(0)), 1)[0]
    values, indices = probs.topk(3)
    expected = {f"class_{i}": v for i, v in zip(indices.tolist(), values.tolist())}
    assert list(r.json()) == list(expected)
    assert r.json() == pytest.approx(expected, rel=1e-4)
    as_b64 = server.post("/predictions/top3", json={"data": base64.b64encode(jpeg).decode()})
    assert as_b64.status_code == 200 and as_b64.json() == pytest.approx(r.json())


def test_not_an_image_is_400(server):
    r = server.post("/predictions/top3", data=b"not a picture at all")
    assert_error(r, 400, "BadRequestException", "not an image")
    assert server.post("/predictions/top3", data=random_image("PNG")).status_code == 200


def test_base_handler_eager_state_dict_and_attributes(server, models):
    regressor = models[1]["regressor"]
    row = [0.5, -1.0, 2.0, 0.25]
    r = server.post("/predictions/regressor", json=row)
    assert r.status_code == 200, r.text
    assert r.json() == pytest.approx(regressor(torch.tensor([row])).tolist()[0], rel=1e-5)
    described = server.post("/predictions/regressor", json=row, headers={"describe": "True"})
    assert described.json() == {"model": "Regressor", "device": "cpu", "map_location": "cpu",
                                "initialized": True, "serialized": "regressor.pth",
                                "pt_path_exists": True, "mapping": {"0": "a", "1": "b", "2": "c"},
                                "yaml": {}}


def test_pt2_section_compiles_the_model(server, models):
    regressor = models[1]["regressor"]
    row = [1.0, 2.0, 3.0, 4.0]
    r = server.post("/predictions/compiled", json=row)
    assert r.status_code == 200, r.text
    assert r.json() == pytest.approx(regressor(torch.tensor([row])).tolist()[0], rel=1e-5)
    described = server.post("/predictions/compiled", json=row, headers={"describe": "True"})
    assert described.json()["model"] == "OptimizedModule"
    assert described.json()["yaml"]["pt2"]["compile"]["backend"] == "eager"


def _sample(text: str, name: str, labels: str) -> float:
    line = next(l for l in text.splitlines() if l.startswith(name + "{") and labels in l)
    return float(line.split()[-1])


def test_context_metrics_request_processor_and_status(server):
    for color in ("red", "red", "blue"):
        r = server.post("/predictions/metrics", json=[1, 2, 3, 4], headers={"X-Color": color})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["header"] == color and body["status"] == [201, "Made"]
        assert set(body["props"]) >= {"model_dir", "gpu_id", "batch_size", "server_name",
                                      "server_version", "limit_max_image_pixels"}
        assert body["batch_size"] == 1 and body["gpu_id"] is None and body["model_dir_ok"]
        assert body["yaml"] == {"colour": "teal"}
    text = server.scrape()
    # counters keep the handler's name, as on TorchServe (no ``_total`` added)
    assert _sample(text, "ts_rows", 'color="red"') == 6
    assert _sample(text, "ts_rows", 'color="blue"') == 3
    assert _sample(text, "ts_requests", 'color="red"') == 2
    assert "# TYPE ts_rows untyped" in text and "ts_rows_total" not in text
    assert _sample(text, "ts_payload", 'color="blue"') == 1.5
    assert _sample(text, "ts_share", 'model_name="metrics"') == 50.0
    assert _sample(text, "ts_latency_count", 'color="red"') == 2
    assert _sample(text, "HandlerTime", 'model_name="metrics"') >= 0
    assert _sample(text, "ts_declared", 'Level="model",color="blue"') == 7


def test_module_level_handle_wins_over_a_class(server):
    r = server.post("/predictions/errors", data="tea")
    assert r.status_code == 200, r.text
    assert r.text == "the function answered tea"


def test_prediction_exception_answers_its_code_and_message(server):
    r = server.post("/predictions/errors", data="teapot")
    assert_error(r, 418, "InternalServerException", "I am a teapot, not a model")
    r = server.post("/predictions/errors", data="odd-code")
    assert_error(r, 500, "InternalServerException", "an odd code")
    v1 = server.post("/v1/models/errors:predict", json={"instances": ["teapot"]})
    assert_error(v1, 418, None, "I am a teapot")
    assert server.post("/predictions/errors", data="fine").status_code == 200


@pytest.mark.parametrize("body", ["oom", "cuda-oom"])
def test_out_of_memory_is_507(server, body):
    r = server.post("/predictions/errors", data=body)
    assert_error(r, 507, "OutOfResourcesException", "out of resources")
    assert server.post("/predictions/errors", data="after").status_code == 200


def test_text_classifier_cleans_tokenizes_and_uses_ngrams(server, models):
    text_model = models[1]["text"]
    r = server.post("/predictions/text", data="<b>Hello</b>, Wörld! Don't panic.".encode(),
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    ids = [VOCAB[t] for t in TEXT_TOKENS]
    ids += [VOCAB[f"{a} {b}"] for a, b in zip(TEXT_TOKENS, TEXT_TOKENS[1:])]
    with torch.no_grad():
        probs = torch.softmax(text_model(torch.tensor(ids), torch.tensor([0])), 1)[0]
    expected = dict(zip(["World", "Sports", "Business"], probs.tolist()))
    assert r.json() == pytest.approx(expected, rel=1e-5)
    assert_error(server.post("/predictions/text", data="!!! ..."), 400, None, "no words")


def test_image_segmenter_answers_class_and_probability_per_pixel(server, models):
    r = server.post("/predictions/segmenter", data=random_image("JPEG", size=(320, 240)))
    assert r.status_code == 200, r.text
    grid = torch.tensor(r.json())
    assert grid.shape == (224, 224, 2)
    assert set(grid[..., 0].unique().tolist()) <= {0.0, 1.0, 2.0}
    assert bool(((grid[..., 1] >= 1 / 3 - 1e-6) & (grid[..., 1] <= 1)).all())


def test_object_detector_keeps_boxes_over_threshold(server, models):
    detector = models[1]["detector"]
    jpeg = random_image("JPEG", size=(64, 48), seed=2)
    r = server.post("/predictions/detector", data=jpeg)
    assert r.status_code == 200, r.text
    image = transforms.ToTensor()(Image.open(io.BytesIO(jpeg)))
    expected_box = detector([image])[0]["boxes"][0].tolist()
    (detection,) = r.json()
    assert list(detection) == ["person", "score"]
    assert detection["person"] == pytest.approx(expected_box, rel=1e-5)
    assert detection["score"] == pytest.approx(0.9)

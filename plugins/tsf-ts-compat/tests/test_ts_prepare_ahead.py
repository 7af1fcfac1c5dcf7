"""A TorchServe ``ImageClassifier`` subclass in tsf's worker: its pictures go through its own
PIL ``image_processing`` in the worker's prepare threads (tsf.runtime.read_ahead), with the same
answers as the stage computing them itself; a subclass with its own ``preprocess`` is left
alone."""

from __future__ import annotations

import io
import json
import textwrap
import threading

import torch
from PIL import Image

from tsf.testing import HandlerHarness

MODEL = '''
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.head = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.conv(x).mean((2, 3)))
'''
PLAIN = '''
    from ts.torch_handler.image_classifier import ImageClassifier

    class Plain(ImageClassifier):
        topk = 2
'''
OWN = '''
    import torch
    from ts.torch_handler.image_classifier import ImageClassifier

    class Own(ImageClassifier):
        topk = 2

        def preprocess(self, data):
            return torch.zeros(len(data), 3, 224, 224)
'''


def _model_dir(tmp_path, handler: str):
    (tmp_path / "tiny.py").write_text(textwrap.dedent(MODEL))
    namespace: dict = {}
    exec((tmp_path / "tiny.py").read_text(), namespace)
    torch.manual_seed(0)
    torch.save(namespace["Tiny"]().state_dict(), tmp_path / "tiny.pth")
    (tmp_path / "handler.py").write_text(textwrap.dedent(handler))
    (tmp_path / "index_to_name.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    manifest = {"runtime": "python", "model": {
        "modelName": "tiny", "modelVersion": "1.0", "handler": "handler.py",
        "modelFile": "tiny.py", "serializedFile": "tiny.pth"}}
    return HandlerHarness(tmp_path, "handler.py", manifest=manifest)


def _jpeg(seed: int) -> bytes:
    pixels = torch.randint(0, 256, (90 + seed, 120, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed)).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_torchserve_image_classifier_prepares_its_pictures_ahead(tmp_path):
    harness = _model_dir(tmp_path, PLAIN)
    runner = harness.runner
    assert runner.preparer is not None
    threads: set[str] = set()
    hook = runner.preparer.hook

    def spy(request, request_id):
        threads.add(threading.current_thread().name)
        return hook(request, request_id)

    runner.preparer.hook = spy
    pictures = [_jpeg(i) for i in range(3)]
    answers = harness.run(pictures + [b"not a picture"])
    assert threads and all(name.startswith("tsf-prepare") for name in threads)
    assert [a.status for a in answers] == [200, 200, 200, 400]
    assert "not an image" in answers[3].json()["message"]
    # the same answers when the stage decodes by itself (nothing prepared ahead)
    runner.preparer = None
    alone = harness.run(pictures)
    assert [a.json() for a in answers[:3]] == [a.json() for a in alone]


def test_a_subclass_with_its_own_preprocess_is_not_prepared_ahead(tmp_path):
    harness = _model_dir(tmp_path, OWN)
    assert harness.runner.preparer is None
    answers = harness.run([_jpeg(0)])
    assert answers[0].status == 200 and len(answers[0].json()) == 2

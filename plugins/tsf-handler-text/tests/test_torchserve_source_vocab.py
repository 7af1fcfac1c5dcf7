"""text_classifier on an archive made for TorchServe's text_classifier: an EmbeddingBag model
called as ``model(text, offsets)`` and a ``source_vocab.pt`` holding a pickled torchtext vocab.

torchtext is not installed, so the test pickles the vocabulary with stand-in classes that have
torchtext's module paths and pickled state (``torchtext.vocab.vocab.Vocab``, an ``nn.Module``
around ``torchtext._torchtext.Vocab``, whose state is ``(version, [default_index], itos, [])``).
The expected answers follow TorchServe's steps, worked out by hand for the test sentences.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from tsf.testing import ServerProcess, assert_error

MODEL_FILE = '''
    import torch

    class TextClassificationModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.EmbeddingBag(12, 8, sparse=True)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, text, offsets):
            return self.fc(self.embedding(text, offsets))
'''
ITOS = ["<unk>", "hello", "world", "cafe", "is", "not", "bad", "hello world", "world cafe",
        "cafe is", "is not", "not bad"]
LABELS = {"0": "World", "1": "Sports", "2": "Business"}


def _torchtext_layout_vocab(itos: list[str], default_index: int) -> object:
    """An object that pickles as torchtext >= 0.10's Vocab does."""
    cpp = types.ModuleType("torchtext._torchtext")
    module = types.ModuleType("torchtext.vocab.vocab")

    class CppVocab:
        def __init__(self, strings, default):
            self.strings, self.default = strings, default

        def __getstate__(self):
            return ("0.0.2", [self.default], list(self.strings), [])

    class Vocab(torch.nn.Module):
        def __init__(self, vocab):
            super().__init__()
            self.vocab = vocab

    CppVocab.__module__, CppVocab.__qualname__, CppVocab.__name__ = \
        "torchtext._torchtext", "Vocab", "Vocab"
    Vocab.__module__, Vocab.__qualname__, Vocab.__name__ = "torchtext.vocab.vocab", "Vocab", "Vocab"
    cpp.Vocab, module.Vocab = CppVocab, Vocab
    for name, mod in (("torchtext", types.ModuleType("torchtext")),
                      ("torchtext.vocab", types.ModuleType("torchtext.vocab")),
                      ("torchtext._torchtext", cpp), ("torchtext.vocab.vocab", module)):
        sys.modules.setdefault(name, mod)
    return Vocab(CppVocab(itos, default_index))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    src = tmp_path_factory.mktemp("tsvocab-src")
    store = tmp_path_factory.mktemp("tsvocab-store")
    (src / "model.py").write_text(textwrap.dedent(MODEL_FILE))
    namespace: dict = {}
    exec(textwrap.dedent(MODEL_FILE), namespace)
    torch.manual_seed(0)
    model = namespace["TextClassificationModel"]().eval()
    torch.save(model.state_dict(), src / "model.pt")
    try:
        torch.save(_torchtext_layout_vocab(ITOS, 0), src / "source_vocab.pt")
    finally:
        for name in ("torchtext.vocab.vocab", "torchtext._torchtext", "torchtext.vocab",
                     "torchtext"):
            sys.modules.pop(name, None)
    (src / "index_to_name.json").write_text(json.dumps(LABELS))
    (src / "model-config.yaml").write_text("batchSize: 2\nmaxBatchDelay: 1000\n")
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run([str(archiver), "--model-name", "news", "--version", "1.0",
                    "--model-file", str(src / "model.py"),
                    "--serialized-file", str(src / "model.pt"), "--handler", "text_classifier",
                    "--extra-files", f"{src / 'source_vocab.pt'},{src / 'index_to_name.json'}",
                    "--config-file", str(src / "model-config.yaml"),
                    "--export-path", str(store)], check=True)
    server = ServerProcess(model_store=store)
    try:
        response = server.register("news.mar")
        assert response.status_code == 200, response.text
        yield server, model
    finally:
        server.stop()


def torchserve_answer(model, ids: list[int]) -> dict:
    with torch.no_grad():
        logits = model(torch.tensor(ids), torch.tensor([0]))
    return {LABELS[str(i)]: p for i, p in enumerate(torch.softmax(logits, dim=1)[0].tolist())}


def test_torchserve_cleanup_tokens_and_bigrams(setup):
    server, model = setup
    # tags gone, lower case, "isn't" -> "is not", "Café" -> "cafe", punctuation gone:
    # hello world cafe is not bad, then the bigrams
    text = "<b>Hello</b>, World! Café isn't bad."
    tokens = ["hello", "world", "cafe", "is", "not", "bad", "hello world", "world cafe",
              "cafe is", "is not", "not bad"]
    response = server.post("/predictions/news", data=text.encode(),
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = torchserve_answer(model, [ITOS.index(t) for t in tokens])
    assert answer.keys() == expected.keys()
    assert list(answer.values()) == pytest.approx(list(expected.values()), abs=1e-6)


def test_unknown_tokens_take_the_default_index(setup):
    server, model = setup
    # "zebra", "hello zebra" and "zebra bad" are not in the vocabulary: index 0 (<unk>)
    response = server.post("/predictions/news", data=b"hello zebra bad",
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    expected = torchserve_answer(model, [1, 0, 6, 0, 0])
    assert list(response.json().values()) == pytest.approx(list(expected.values()), abs=1e-6)


def test_a_batch_is_one_text_with_an_offset_per_request(setup):
    from concurrent.futures import ThreadPoolExecutor

    server, model = setup
    texts = ["hello world", "not bad"]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda t: server.post(
            "/predictions/news", data=t.encode(), headers={"Content-Type": "text/plain"}),
            texts))
    expected = [torchserve_answer(model, [1, 2, 7]), torchserve_answer(model, [5, 6, 11])]
    for response, want in zip(answers, expected):
        assert response.status_code == 200
        assert list(response.json().values()) == pytest.approx(list(want.values()), abs=1e-6)


def test_a_vocabulary_that_would_run_code_is_refused(tmp_path):
    from tsf.errors import ModelLoadError
    from tsf_handler_text.source_vocab import load_source_vocab

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save(Evil(), tmp_path / "source_vocab.pt")
    with pytest.raises(ModelLoadError, match="not allowed"):
        load_source_vocab(tmp_path / "source_vocab.pt")


def test_not_text(setup):
    server, _ = setup
    assert_error(server.post("/predictions/news", data=b"\xff\xfe\x00",
                             headers={"Content-Type": "application/octet-stream"}),
                 400, "BadRequestException")


def test_explanations_are_not_implemented_for_these_archives(setup):
    server, _ = setup
    assert_error(server.post("/explanations/news", data=b"hello world",
                             headers={"Content-Type": "text/plain"}), 501,
                 "NotImplementedException")

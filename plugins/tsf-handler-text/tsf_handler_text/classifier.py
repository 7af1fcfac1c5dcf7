"""``text_classifier``: ``{label: probability}`` for every class, per request.

A request's text is a UTF-8 body, ``{"text": ...}`` or ``{"data": ...}``.  Requests of a batch
are tokenized, padded to the longest and sent as ``model(input_ids, attention_mask)`` (or just
``model(input_ids)`` with ``handler: {attention_mask: false}``).  The model returns one logits row
per text (a tuple's first element, or a dict's ``"logits"``).

An archive made for TorchServe's ``text_classifier`` (a ``source_vocab.pt`` among its files, or
named by the manifest's ``sourceVocab``) is served as TorchServe serves it: TorchServe's text
cleanup, ``basic_english`` tokens plus bigrams, looked up in the vocabulary and sent as
``model(text, offsets)`` (an ``EmbeddingBag`` model); the requests of a batch are one
``text`` with one offset each.

Options (model-config.yaml ``handler:``): ``max_length`` (128), ``attention_mask`` (true),
``lowercase`` (vocabulary tokenizer), ``tokenizer_file``, ``vocab_file``; for ``source_vocab.pt``
archives ``ngrams`` (2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsf.archives.labels import Labels
from tsf.errors import BadRequest
from tsf.handler import BaseHandler

from . import torchserve_text
from .source_vocab import SourceVocab, load_source_vocab
from .tokenization import load_tokenizer


class TextClassifier(BaseHandler):
    """Classifies texts with any model taking token ids (and a mask)."""

    task = "text_classification"

    defaults: dict[str, Any] = {"max_length": 128, "attention_mask": True, "ngrams": 2}
    source_vocab: SourceVocab | None = None

    def tsf_load_model(self, context: Any) -> Any:
        model = super().tsf_load_model(context)
        self.options = {**self.defaults, **context.handler_config}
        self.labels = Labels.from_model_dir(context.model_dir)
        model_dir = Path(context.model_dir)
        named = (context.manifest.get("model") or {}).get("sourceVocab")
        vocab = model_dir / (named or "source_vocab.pt")
        if vocab.is_file():
            self.source_vocab = load_source_vocab(vocab)
            self.task = None  # no explainer knows (text, offsets) models: explain answers 501
        else:
            self.tokenizer = load_tokenizer(model_dir, self.options)
        return model

    def text(self, context: Any, request: dict, index: int) -> str:
        value = request.get("data", request.get("body"))
        if isinstance(value, dict):
            value = value.get("text", value.get("data"))
        if isinstance(value, (bytes, bytearray)):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                value = None
        if not isinstance(value, str):
            raise BadRequest(f"request {context.get_request_id(index) or index}: expected "
                             "UTF-8 text or {\"text\": \"...\"}")
        return value

    def tsf_preprocess(self, context: Any, requests: list[dict]) -> Any:
        import torch

        if self.source_vocab is not None:
            return self.vocab_batch(context, requests)
        max_length = int(self.options["max_length"])
        encoded = [self.tokenizer.encode(self.text(context, r, i), max_length)
                   for i, r in enumerate(requests)]
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, :len(tokens)] = 1
        return ids.to(context.device), mask.to(context.device)

    def vocab_batch(self, context: Any, requests: list[dict]) -> Any:
        """``(text, offsets)`` as TorchServe builds them: every request's token ids back to
        back, and where each request starts."""
        import torch

        vocab, n = self.source_vocab, int(self.options["ngrams"])
        assert vocab is not None
        ids: list[int] = []
        offsets: list[int] = []
        for i, request in enumerate(requests):
            offsets.append(len(ids))
            ids.extend(vocab[token] for token in
                       torchserve_text.tokens(self.text(context, request, i), n))
        return (torch.tensor(ids, dtype=torch.long, device=context.device),
                torch.tensor(offsets, dtype=torch.long, device=context.device))

    def forward(self, context: Any, batch: Any) -> Any:
        """Logits, one row per text, from ``(input_ids, attention_mask)`` (or, for a
        ``source_vocab.pt`` archive, ``(text, offsets)``)."""
        ids, mask = batch
        if self.source_vocab is not None or self.options.get("attention_mask", True):
            outputs = context.model(ids, mask)
        else:
            outputs = context.model(ids)
        if isinstance(outputs, dict):
            outputs = outputs["logits"]
        if isinstance(outputs, (tuple, list)):
            outputs = outputs[0]
        return outputs

    def tsf_postprocess(self, context: Any, outputs: Any) -> list:
        import torch

        probs = torch.softmax(outputs.float(), dim=-1)
        return [{self.labels(i): p for i, p in enumerate(row)} for row in probs.tolist()]

"""``text_classifier``: ``{label: probability}`` for every class, per request.

A request's text is a UTF-8 body, ``{"text": ...}`` or ``{"data": ...}``.  Requests of a batch
are tokenized, padded to the longest and sent as ``model(input_ids, attention_mask)`` (or just
``model(input_ids)`` with ``handler: {attention_mask: false}``).  The model returns one logits row
per text (a tuple's first element, or a dict's ``"logits"``).

Options (model-config.yaml ``handler:``): ``max_length`` (128), ``attention_mask`` (true),
``lowercase`` (vocabulary tokenizer), ``tokenizer_file``, ``vocab_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsf.errors import BadRequest
from tsf.handler import BaseHandler
from tsf.labels import Labels

from .tokenization import load_tokenizer


class TextClassifier(BaseHandler):
    """Classifies texts with any model taking token ids (and a mask)."""

    task = "text_classification"

    defaults: dict[str, Any] = {"max_length": 128, "attention_mask": True}

    def tsf_load_model(self, context: Any) -> Any:
        model = super().tsf_load_model(context)
        self.options = {**self.defaults, **context.handler_config}
        self.labels = Labels.from_model_dir(context.model_dir)
        self.tokenizer = load_tokenizer(Path(context.model_dir), self.options)
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

    def forward(self, context: Any, batch: Any) -> Any:
        """Logits, one row per text, from ``(input_ids, attention_mask)``."""
        ids, mask = batch
        if self.options.get("attention_mask", True):
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

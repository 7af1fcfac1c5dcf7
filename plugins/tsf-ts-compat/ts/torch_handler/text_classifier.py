"""``TextClassifier``: cleaned, tokenized text with n-grams -> ``model(text, offsets)``.

As TorchServe's, it classifies the first request of a batch only (use batch size 1).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from tsf.errors import BadRequest

from ..handler_utils.text_utils import ngrams_iterator
from ..utils.util import map_class_to_label
from .text_handler import TextHandler

logger = logging.getLogger(__name__)


class TextClassifier(TextHandler):
    """Answers ``{label: probability}`` for every class (EmbeddingBag-style models)."""

    ngrams = 2

    def preprocess(self, data: list) -> tuple[Any, list[str]]:
        line = data[0]
        text = line.get("data") or line.get("body") if isinstance(line, dict) else line
        if isinstance(text, (bytes, bytearray)):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("request 0: text is not UTF-8") from None
        if not isinstance(text, str):
            raise BadRequest("request 0: expected text")
        text = self._remove_html_tags(text).lower()
        text = self._expand_contractions(text)
        text = self._remove_accented_characters(text)
        text = self._remove_punctuation(text)
        tokens = self._tokenize(text)
        if not tokens:
            raise BadRequest("request 0: no words left in the text after cleanup")
        ids = [self.source_vocab[t] for t in ngrams_iterator(tokens, self.ngrams)]
        return torch.as_tensor(ids, device=self.device), tokens

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        text_tensor, _ = data
        offsets = torch.as_tensor([0], device=self.device)
        return super().inference(text_tensor, offsets)

    def postprocess(self, data: Any) -> list:
        return map_class_to_label(F.softmax(data, dim=1).tolist(), self.mapping)

    def get_insights(self, text_preprocess: Any, _: Any, target: Any = 0) -> list:
        lig = self._captum()
        from captum.attr import TokenReferenceBase

        text_tensor, all_tokens = text_preprocess
        offsets = torch.tensor([0]).to(self.device)
        reference = TokenReferenceBase().generate_reference(
            text_tensor.shape[0], device=self.device).squeeze(0)
        attributions = lig.attribute(text_tensor, reference, additional_forward_args=(offsets),
                                     return_convergence_delta=False, target=target)
        return [{"importances": self.summarize_attributions(attributions).tolist(),
                 "words": self.get_word_token(all_tokens)}]

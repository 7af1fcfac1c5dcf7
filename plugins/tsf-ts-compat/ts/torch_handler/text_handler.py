"""``TextHandler``: the source vocabulary and TorchServe's text cleanup helpers.

The vocabulary is ``source_vocab.pt`` (or the manifest's ``sourceVocab``), loaded with
``torch.load(weights_only=True)``: a ``{token: id}`` dict (unknown tokens map to ``<unk>``, else
0).  Pickled torchtext ``Vocab`` objects are refused: unpickling them could run code.
"""

from __future__ import annotations

import logging
import os
import re
import string
import unicodedata
from typing import Any

import torch
import torch.nn.functional as F

from tsf.errors import ModelLoadError, NotImplementedByModel

from ..handler_utils.text_utils import get_tokenizer
from ..utils.util import CLEANUP_REGEX
from .base_handler import BaseHandler
from .contractions import CONTRACTION_MAP

logger = logging.getLogger(__name__)

CONTRACTIONS_PATTERN = re.compile("({})".format("|".join(map(re.escape, CONTRACTION_MAP))),
                                  flags=re.IGNORECASE | re.DOTALL)


class Vocabulary:
    """``vocab[token]`` -> id, with unknown tokens mapped to ``<unk>`` (or 0)."""

    def __init__(self, stoi: dict[str, int]) -> None:
        self.stoi = stoi
        self.unk = stoi.get("<unk>", 0)

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, self.unk)

    def __len__(self) -> int:
        return len(self.stoi)

    def get_stoi(self) -> dict[str, int]:
        return self.stoi


def load_vocabulary(path: str) -> Vocabulary:
    try:
        value = torch.load(path, weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{os.path.basename(path)} could not be loaded with weights_only=True ({exc}); "
            "save the vocabulary as a {token: id} dict (torch.save(vocab.get_stoi(), ...))"
        ) from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{os.path.basename(path)} is not a {{token: id}} dict")
    return Vocabulary(value)


class TextHandler(BaseHandler):
    """Base for text handlers: vocabulary, ``basic_english`` tokenizer, cleanup helpers."""

    def __init__(self) -> None:
        super().__init__()
        self.source_vocab: Any = None
        self.tokenizer = get_tokenizer("basic_english")
        self.input_text = None
        self.lig: Any = None
        self.initialized = None

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        self.initialized = False
        source_vocab = self.manifest["model"].get("sourceVocab")
        path = (os.path.join(context.system_properties["model_dir"], source_vocab)
                if source_vocab else self.get_source_vocab_path(context))
        self.source_vocab = load_vocabulary(path)
        try:
            from captum.attr import LayerIntegratedGradients
        except ImportError:
            self.lig = None
        else:
            embedding = getattr(self.model, "embedding", None)
            self.lig = LayerIntegratedGradients(self.model, embedding) if embedding else None
        self.initialized = True

    def get_source_vocab_path(self, ctx: Any) -> str:
        path = os.path.join(ctx.system_properties.get("model_dir"), "source_vocab.pt")
        if not os.path.isfile(path):
            raise ModelLoadError("Missing the source_vocab file (source_vocab.pt): archive it "
                                 "with --extra-files")
        return path

    def _expand_contractions(self, text: str) -> str:
        def expand(match: re.Match) -> str:
            word = match.group(0)
            expanded = CONTRACTION_MAP.get(word) or CONTRACTION_MAP.get(word.lower(), word)
            return word[0] + expanded[1:]

        return CONTRACTIONS_PATTERN.sub(expand, text).replace("'", "")

    def _remove_accented_characters(self, text: str) -> str:
        return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("utf-8")

    def _remove_html_tags(self, text: str) -> str:
        return CLEANUP_REGEX.sub("", text)

    def _remove_punctuation(self, text: str) -> str:
        return text.translate(str.maketrans("", "", string.punctuation))

    _remove_puncutation = _remove_punctuation  # TorchServe's misspelt name

    def _tokenize(self, text: str) -> list[str]:
        return self.tokenizer(text)

    def get_word_token(self, input_tokens: list[str]) -> list[str]:
        return [token.replace("Ġ", "") for token in input_tokens]

    def summarize_attributions(self, attributions: Any) -> Any:
        attributions = F.softmax(attributions, dim=-1)
        return attributions / torch.norm(attributions.sum(dim=-1))

    def _captum(self) -> Any:
        if self.lig is None:
            raise NotImplementedByModel("explanations need Captum (pip install captum) and a "
                                        "model with an `embedding` layer")
        return self.lig

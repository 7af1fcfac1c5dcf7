"""Tokenizers for the text classifier: a ``tokenizer.json`` (Hugging Face ``tokenizers``) if the
archive has one, else a plain vocabulary file (one token per line, the line number is its id)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from tsf.errors import ModelLoadError

_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class Tokenizer(Protocol):
    pad_id: int

    def encode(self, text: str, max_length: int) -> list[int]: ...

    def token_strings(self, ids: list[int]) -> list[str]: ...

    def special_mask(self, ids: list[int]) -> list[bool]: ...


class JsonTokenizer:
    """A ``tokenizers`` tokenizer from ``tokenizer.json`` (adds its special tokens)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.tokenizer = HFTokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        padding = self.tokenizer.padding
        pad = self.tokenizer.token_to_id("[PAD]")
        if pad is None:
            pad = self.tokenizer.token_to_id("<pad>")
        self.pad_id = int(pad if pad is not None else (padding or {}).get("pad_id", 0))
        self.special_ids = {i for i, tok in self.tokenizer.get_added_tokens_decoder().items()
                            if tok.special}

    def encode(self, text: str, max_length: int) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if len(ids) > max_length:  # keep the final special token ([SEP]) when truncating
            ids = ids[:max_length - 1] + ids[-1:]
        return ids

    def token_strings(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.id_to_token(i) or "" for i in ids]

    def special_mask(self, ids: list[int]) -> list[bool]:
        return [i in self.special_ids for i in ids]


class VocabTokenizer:
    """Lower-cases, splits on words and punctuation, maps tokens to line numbers."""

    def __init__(self, path: Path, lowercase: bool = True) -> None:
        tokens = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        self.ids = {tok: i for i, tok in enumerate(tokens) if tok}
        self.names = {i: tok for tok, i in self.ids.items()}
        self.lowercase = lowercase
        self.pad_id = self._special("[PAD]", "<pad>", default=0)
        self.unk_id = self._special("[UNK]", "<unk>", default=self.pad_id)

    def _special(self, *names: str, default: int) -> int:
        return next((self.ids[n] for n in names if n in self.ids), default)

    def tokens(self, text: str) -> list[str]:
        return _WORDS.findall(text.lower() if self.lowercase else text)

    def encode(self, text: str, max_length: int) -> list[int]:
        ids = [self.ids.get(tok, self.unk_id) for tok in self.tokens(text)][:max_length]
        return ids or [self.unk_id]

    def token_strings(self, ids: list[int]) -> list[str]:
        return [self.names.get(i, "") for i in ids]

    def special_mask(self, ids: list[int]) -> list[bool]:
        return [False] * len(ids)


def load_tokenizer(model_dir: Path, options: dict) -> Tokenizer:
    json_file = model_dir / options.get("tokenizer_file", "tokenizer.json")
    if json_file.exists():
        return JsonTokenizer(json_file)
    vocab = model_dir / options.get("vocab_file", "vocab.txt")
    if vocab.exists():
        return VocabTokenizer(vocab, lowercase=bool(options.get("lowercase", True)))
    raise ModelLoadError("text_classifier needs tokenizer.json or vocab.txt in the archive "
                         "(add it with --extra-files)")

"""Text helpers TorchServe's text handlers use: the ``basic_english`` tokenizer and n-grams."""

from __future__ import annotations

import re
from typing import Callable, Iterator

# basic_english: split punctuation off words, drop quotes and some separators, lower-case
_BASIC_ENGLISH = [(re.compile(p), r) for p, r in (
    (r"\'", " '  "), (r"\"", ""), (r"\.", " . "), (r"<br \/>", " "), (r",", " , "),
    (r"\(", " ( "), (r"\)", " ) "), (r"\!", " ! "), (r"\?", " ? "), (r"\;", " "), (r"\:", " "),
    (r"\s+", " "))]


def _basic_english(line: str) -> list[str]:
    line = line.lower()
    for pattern, replacement in _BASIC_ENGLISH:
        line = pattern.sub(replacement, line)
    return line.split()


def get_tokenizer(tokenizer: str | Callable | None, language: str = "en") -> Callable:
    """``"basic_english"``, ``None`` (split on spaces) or a callable returned as it is."""
    if callable(tokenizer):
        return tokenizer
    if tokenizer is None:
        return str.split
    if tokenizer == "basic_english":
        if language != "en":
            raise ValueError("basic_english only supports the language 'en'")
        return _basic_english
    raise ValueError(f"tokenizer {tokenizer!r} is not available in tsf-ts-compat "
                     "(basic_english, None or a callable)")


def ngrams_iterator(token_list: list[str], ngrams: int) -> Iterator[str]:
    """The tokens, then every run of 2..``ngrams`` consecutive tokens joined by spaces."""
    yield from token_list
    for n in range(2, ngrams + 1):
        for start in range(len(token_list) - n + 1):
            yield " ".join(token_list[start:start + n])

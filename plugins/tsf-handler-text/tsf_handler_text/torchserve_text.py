"""TorchServe's text pipeline for ``source_vocab.pt`` archives, written after its documented
steps: strip HTML tags, lower-case, expand contractions, drop accents, drop punctuation, split as
torchtext's ``basic_english`` tokenizer does, then add n-grams (TorchServe's ``ngrams = 2``).

The contraction list is tsf's own (common English contractions); TorchServe's is longer, so a
rarer contraction here just loses its apostrophe (``"y'all"`` -> ``"yall"``).
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Iterator

_TAGS = re.compile(r"<.*?>")
_CONTRACTIONS = {
    "ain't": "is not", "aren't": "are not", "can't": "cannot", "couldn't": "could not",
    "didn't": "did not", "doesn't": "does not", "don't": "do not", "hadn't": "had not",
    "hasn't": "has not", "haven't": "have not", "he'd": "he would", "he'll": "he will",
    "he's": "he is", "i'd": "i would", "i'll": "i will", "i'm": "i am", "i've": "i have",
    "isn't": "is not", "it'd": "it would", "it'll": "it will", "it's": "it is",
    "let's": "let us", "mightn't": "might not", "mustn't": "must not", "shan't": "shall not",
    "she'd": "she would", "she'll": "she will", "she's": "she is", "shouldn't": "should not",
    "that's": "that is", "there's": "there is", "they'd": "they would",
    "they'll": "they will", "they're": "they are", "they've": "they have",
    "wasn't": "was not", "we'd": "we would", "we'll": "we will", "we're": "we are",
    "we've": "we have", "weren't": "were not", "what's": "what is", "where's": "where is",
    "who's": "who is", "won't": "will not", "wouldn't": "would not", "you'd": "you would",
    "you'll": "you will", "you're": "you are", "you've": "you have",
}
_CONTRACTION = re.compile("|".join(re.escape(c) for c in sorted(_CONTRACTIONS, key=len,
                                                                reverse=True)),
                          flags=re.IGNORECASE)
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# torchtext's basic_english: these marks become separate tokens (or spaces) before splitting
_BASIC_ENGLISH = [(re.compile(r"\'"), " '  "), (re.compile(r"\""), ""),
                  (re.compile(r"\."), " . "), (re.compile(r"<br \/>"), " "),
                  (re.compile(r","), " , "), (re.compile(r"\("), " ( "),
                  (re.compile(r"\)"), " ) "), (re.compile(r"\!"), " ! "),
                  (re.compile(r"\?"), " ? "), (re.compile(r"\;"), " "),
                  (re.compile(r"\:"), " "), (re.compile(r"\s+"), " ")]


def _expand(match: re.Match) -> str:
    found = match.group(0)
    expanded = _CONTRACTIONS[found.lower()]
    return found[0] + expanded[1:]  # keeps the first letter's case, as TorchServe does


def clean(text: str) -> str:
    """TorchServe's TextClassifier cleanup, up to (not including) tokenization."""
    text = _TAGS.sub("", text).lower()
    text = _CONTRACTION.sub(_expand, text).replace("'", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("utf-8")
    return text.translate(_PUNCTUATION)


def basic_english(text: str) -> list[str]:
    text = text.lower()
    for pattern, replacement in _BASIC_ENGLISH:
        text = pattern.sub(replacement, text)
    return text.split()


def ngrams(tokens: list[str], n: int) -> Iterator[str]:
    """The tokens, then every run of 2..n consecutive tokens joined by a space."""
    yield from tokens
    for size in range(2, n + 1):
        for start in range(len(tokens) - size + 1):
            yield " ".join(tokens[start:start + size])


def tokens(text: str, n: int = 2) -> list[str]:
    return list(ngrams(basic_english(clean(text)), n))

"""TorchServe's ``source_vocab.pt`` (a pickled torchtext vocabulary) read without torchtext.

The file is unpickled with a restricted unpickler: torchtext's classes are replaced by plain
stand-ins that keep only the token list and the default (unknown-token) index, and any other
class outside a short allowlist is refused, so loading a vocabulary cannot run code.  Read:
torchtext >= 0.10 ``Vocab`` (an ``nn.Module`` around the C++ vocabulary, whose pickled state is
``(version, [default_index], itos, tensors)``), legacy torchtext ``Vocab`` (``itos``/``stoi``,
unknown tokens -> index 0), and a plain ``{token: id}`` dict or token list.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

from tsf.errors import ModelLoadError


class _CppVocab:
    """Stands in for ``torchtext._torchtext.Vocab``: keeps its token list and default index."""

    def __setstate__(self, state: tuple) -> None:
        _version, integers, strings, _tensors = state
        self.itos = list(strings)
        self.default_index = int(integers[0]) if integers else None


class _ModuleVocab:
    """Stands in for ``torchtext.vocab.vocab.Vocab`` (its ``vocab`` attribute is a _CppVocab)."""


class _LegacyVocab:
    """Stands in for the legacy ``torchtext.vocab.Vocab`` (``itos``, ``stoi``)."""


def _unknown_is_zero() -> int:  # legacy torchtext's ``_default_unk_index``
    return 0


_STAND_INS = {
    ("torchtext._torchtext", "Vocab"): _CppVocab,
    ("torchtext.vocab.vocab", "Vocab"): _ModuleVocab,
    ("torchtext.vocab", "Vocab"): _LegacyVocab,
    ("torchtext.vocab", "_default_unk_index"): _unknown_is_zero,
    ("torchtext.legacy.vocab", "Vocab"): _LegacyVocab,
    ("torchtext.legacy.vocab", "_default_unk_index"): _unknown_is_zero,
}
_ALLOWED = {("collections", "OrderedDict"), ("collections", "defaultdict"),
            ("collections", "Counter"), ("builtins", "set"), ("builtins", "frozenset"),
            ("builtins", "object"), ("copyreg", "_reconstructor"),
            ("torch._utils", "_rebuild_tensor_v2"), ("torch", "Size")}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2 names builtins as Python 2 did
            module = "builtins"
        if (module, name) in _STAND_INS:
            return _STAND_INS[(module, name)]
        if (module, name) in _ALLOWED or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a vocabulary file")


_PICKLE = types.ModuleType("tsf_source_vocab_pickle")
_PICKLE.Unpickler = _Unpickler  # type: ignore[attr-defined]
_PICKLE.load = lambda f, **kw: _Unpickler(f, **kw).load()  # type: ignore[attr-defined]
_PICKLE.__dict__["UnpicklingError"] = pickle.UnpicklingError


class SourceVocab:
    """Token -> id, with the vocabulary's default index for unknown tokens."""

    def __init__(self, itos: list[str], default_index: int | None) -> None:
        self.itos = itos
        self.stoi = {token: i for i, token in enumerate(itos)}
        self.default_index = default_index

    def __getitem__(self, token: str) -> int:
        index = self.stoi.get(token, self.default_index)
        if index is None:  # torchtext raises too when no default index is set
            raise KeyError(f"token {token!r} is not in the vocabulary, which has no default "
                           "index")
        return index

    def __len__(self) -> int:
        return len(self.itos)


def load_source_vocab(path: Path) -> SourceVocab:
    import torch

    try:
        value = torch.load(str(path), map_location="cpu", pickle_module=_PICKLE,
                           weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path.name} as a torchtext vocabulary: "
                             f"{type(exc).__name__}: {exc}") from None
    return _as_vocab(value, path.name)


def _as_vocab(value: Any, name: str) -> SourceVocab:
    if isinstance(value, _ModuleVocab) and isinstance(getattr(value, "vocab", None), _CppVocab):
        value = value.vocab
    if isinstance(value, _CppVocab):
        return SourceVocab(value.itos, value.default_index)
    if isinstance(value, _LegacyVocab):
        vocab = SourceVocab(list(getattr(value, "itos", [])), getattr(value, "unk_index", None))
        stoi = getattr(value, "stoi", None)
        if isinstance(stoi, dict):
            vocab.stoi = dict(stoi)
        return vocab
    if isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
        itos = [""] * (max(value.values(), default=-1) + 1)
        for token, index in value.items():
            itos[index] = token
        vocab = SourceVocab(itos, None)
        vocab.stoi = dict(value)
        return vocab
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return SourceVocab(value, None)
    raise ModelLoadError(f"{name} holds a {type(value).__name__}, not a torchtext vocabulary")

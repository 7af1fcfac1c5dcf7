"""A tiny Llama and its tokenizer, built once per test session (nothing is downloaded)."""

from __future__ import annotations

import pytest

SMALL = dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab_size=1024,
             corpus_lines=3000, max_positions=512)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    from tsf_engine_transformers.tiny import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm"), **SMALL)

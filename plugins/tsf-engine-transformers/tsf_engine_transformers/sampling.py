"""Picking each sequence's next token from its logits.

Greedy rows (temperature 0) take the argmax, as ``model.generate(do_sample=False)`` does.
Sampled rows go through transformers' warpers in its order (temperature, top-k, top-p), computed
for all sampled rows at once but row by row in effect (each row's numbers depend on that row
only), then ``torch.multinomial`` with the sequence's own generator: a request with a ``seed``
gets the same tokens whatever else shares its steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def make_generator(seed: int | None, choice: int, device: Any) -> torch.Generator:
    """The random stream of one choice: ``seed + choice`` when seeded, else fresh."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed((seed + choice) % 2**64)
    return generator


def pick(logits: torch.Tensor, sequences: Sequence[Any]) -> list[int]:
    """The next token of each row of ``logits`` (``[rows, vocab]``, float32); each sequence
    has ``params`` (a SamplingParams), ``generator`` and ``banned`` (token ids it may not
    take yet: end-of-sequence before ``min_tokens``)."""
    for row, sequence in enumerate(sequences):
        if sequence.banned:
            logits[row, sequence.banned] = -float("inf")
    tokens = logits.argmax(dim=-1).tolist()
    rows = [i for i, s in enumerate(sequences) if not s.params.greedy]
    if not rows:
        return tokens
    chosen = [sequences[i] for i in rows]
    scores = logits[rows] / torch.tensor([s.params.temperature for s in chosen],
                                         device=logits.device).unsqueeze(1)
    top_k = [min(s.params.top_k, scores.shape[-1]) if s.params.top_k > 0 else 0 for s in chosen]
    if any(top_k):
        kept = torch.topk(scores, max(top_k), dim=-1).values
        index = torch.tensor([max(k, 1) - 1 for k in top_k], device=logits.device).unsqueeze(1)
        kth = kept.gather(1, index)
        off = torch.tensor([k == 0 for k in top_k], device=logits.device).unsqueeze(1)
        scores = scores.masked_fill((scores < kth) & ~off, -float("inf"))
    top_p = torch.tensor([s.params.top_p for s in chosen], device=logits.device)
    if bool((top_p < 1.0).any()):
        ordered, order = torch.sort(scores, descending=False)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - top_p).unsqueeze(1)
        drop[..., -1:] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    probabilities = torch.softmax(scores, dim=-1)
    for j, i in enumerate(rows):
        tokens[i] = int(torch.multinomial(probabilities[j], 1,
                                          generator=chosen[j].generator)[0])
    return tokens

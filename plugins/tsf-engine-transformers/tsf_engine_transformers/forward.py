"""The model's forward pass over the slot cache, two ways that compute the same thing.

* :class:`LeanForward`, for Llama-shaped models (Llama, Mistral without a sliding window,
  Qwen2): a loop over the model's own modules (norms, projections, rotary embedding, MLP) with
  torch's ``scaled_dot_product_attention``, skipping transformers' per-call machinery (its mask
  factory, output capture, keyword plumbing).  The fastest on CPU.
* :class:`ModelForward`, for every other causal LM: the model's own ``forward`` with
  :class:`~tsf_engine_transformers.kv_cache.SlotCache` as its cache.

Both return the last position's logits (float32) of each row; given ``last`` (a right-padded
prefill), each row's last real token's.  Greedy output equals ``model.generate``'s token for
token (tests/test_engine.py).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

from .kv_cache import SlotCache

LEAN_MODEL_TYPES = ("llama", "mistral", "qwen2")


def make_forward(model: Any, cache: SlotCache) -> ModelForward | LeanForward:
    """The fastest forward that is exact for ``model``."""
    config = model.config
    base = getattr(model, "model", None)
    layer = base.layers[0] if base is not None and hasattr(base, "layers") else None
    attention = getattr(layer, "self_attn", None)
    lean = (config.model_type in LEAN_MODEL_TYPES
            and not getattr(config, "sliding_window", None)
            and not getattr(config, "use_sliding_window", False)
            and getattr(config, "logit_scale", None) is None
            and attention is not None
            and not hasattr(attention, "q_norm") and not hasattr(attention, "k_norm")
            and all(hasattr(base, n) for n in ("embed_tokens", "norm", "rotary_emb")))
    return LeanForward(model, cache) if lean else ModelForward(model, cache)


class ModelForward:
    """The model's own forward, reading and writing the slot cache."""

    def __init__(self, model: Any, cache: SlotCache) -> None:
        self.model, self.cache = model, cache
        parameters = inspect.signature(model.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor,
                 mask: torch.Tensor | None, last: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(input_ids=input_ids, position_ids=positions, attention_mask=mask,
                         use_cache=True, logits_to_keep=1 if last is None else 0,
                         **{self.cache_argument: self.cache})
        logits = out.logits
        if last is not None:
            logits = logits[torch.arange(logits.shape[0]), last].unsqueeze(1)
        return logits[:, -1].float()


class LeanForward:
    """A Llama-shaped model's forward over its own modules, with torch's SDPA."""

    def __init__(self, model: Any, cache: SlotCache) -> None:
        self.cache = cache
        base = model.model
        self.embed, self.layers, self.norm = base.embed_tokens, base.layers, base.norm
        self.rotary, self.lm_head = base.rotary_emb, model.lm_head
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.groups = self.heads // self.kv_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = getattr(base.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rotate = apply_rotary_pos_emb

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        batch, heads, length, dim = q.shape
        if mask is None:  # a prefill from position 0: causal, keys as long as the queries
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=length > 1,
                                                 scale=self.scale, enable_gqa=self.groups > 1)
            return out.transpose(1, 2).reshape(batch, length, heads * dim)
        if length == 1 and self.groups > 1:  # decode: one KV head's query heads side by side
            out = F.scaled_dot_product_attention(
                q.reshape(batch, self.kv_heads, self.groups, dim), keys, values,
                attn_mask=mask, scale=self.scale)
            return out.reshape(batch, heads, 1, dim).transpose(1, 2).reshape(batch, 1,
                                                                              heads * dim)
        if self.groups > 1:
            keys = keys.repeat_interleave(self.groups, dim=1)
            values = values.repeat_interleave(self.groups, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
        return out.transpose(1, 2).reshape(batch, length, heads * dim)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor,
                 mask: torch.Tensor | None, last: torch.Tensor | None = None) -> torch.Tensor:
        batch, length = input_ids.shape
        hidden = self.embed(input_ids)
        cos, sin = self.rotary(hidden, positions)
        shape = (batch, length, -1, self.head_dim)
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attention.q_proj(x).view(shape).transpose(1, 2)
            k = attention.k_proj(x).view(shape).transpose(1, 2)
            v = attention.v_proj(x).view(shape).transpose(1, 2)
            q, k = self.rotate(q, k, cos, sin)
            keys, values = self.cache.write(index, k, v)
            hidden = hidden + attention.o_proj(self._attend(q, keys, values, mask))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        if last is None:
            hidden = hidden[:, -1:]
        else:
            hidden = hidden[torch.arange(batch), last].unsqueeze(1)
        return self.lm_head(self.norm(hidden))[:, -1].float()

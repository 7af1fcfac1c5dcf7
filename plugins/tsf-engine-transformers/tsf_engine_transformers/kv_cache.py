"""The KV cache: one pre-allocated slot per sequence, usable by our own forward and, as a
transformers ``Cache``, by the model's.

Per layer, keys and values are ``[slots, kv_heads, max_len, head_dim]`` tensors.  A sequence
owns one slot for its life: nothing is re-padded, concatenated or re-allocated when sequences
join or leave.  Decoding sequences occupy the dense prefix ``[0, B)`` of the slots, so a decode
step reads the plain view ``K[:B, :, :kv_len]``; when one leaves, the last is moved into its
slot (:meth:`SlotCache.move`).

Before each forward the scheduler sets the mode: :meth:`prefill` (rows ``first..first+n`` get
``q_len`` tokens from position ``start``) or :meth:`decode` (rows ``0..B`` get one token each at
their own position).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class _SlotLayer(CacheLayerMixin):
    """One layer of :class:`SlotCache`, as transformers' attention calls it."""

    is_sliding = False
    is_compileable = False

    def __init__(self, owner: SlotCache, index: int) -> None:
        super().__init__()
        self.owner, self.index = owner, index
        self.keys, self.values = owner.keys[index], owner.values[index]
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # allocated up front

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        return self.owner.write(self.index, key_states, value_states)

    def get_mask_sizes(self, query_length: int, *args, **kwargs) -> tuple[int, int]:
        return self.owner.kv_length(query_length), 0

    def get_seq_length(self) -> int:
        return self.owner.start

    def get_max_length(self) -> int:
        return self.owner.max_len


class SlotCache(Cache):
    """Keys and values of ``slots`` sequences of up to ``max_len`` tokens each."""

    def __init__(self, config, slots: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers = text.num_hidden_layers
        kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.slots, self.max_len = slots, max_len
        shape = (slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        super().__init__(layers=[_SlotLayer(self, i) for i in range(layers)])
        self.start = 0
        self._mode = "decode"
        self._first = self._rows_n = self._batch = self._kv_len = 0
        self._positions: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def prefill(self, first: int, rows: int, start: int) -> None:
        """Rows ``first..first+rows`` receive tokens from position ``start``."""
        self._mode, self._first, self._rows_n, self.start = "prefill", first, rows, start

    def decode(self, batch: int, positions: torch.Tensor, kv_len: int) -> None:
        """Rows ``0..batch`` receive one token each, at ``positions``; attention reads
        ``kv_len`` positions."""
        self._mode, self._batch, self._positions, self._kv_len, self.start = \
            "decode", batch, positions, kv_len, 0
        self._rows = torch.arange(batch, device=positions.device)

    def kv_length(self, query_length: int) -> int:
        return self.start + query_length if self._mode == "prefill" else self._kv_len

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this forward's keys and values; the keys and values attention reads."""
        keys, values = self.keys[layer], self.values[layer]
        if self._mode == "prefill":
            first, rows, start, q = self._first, self._rows_n, self.start, k.shape[2]
            keys[first:first + rows, :, start:start + q] = k
            values[first:first + rows, :, start:start + q] = v
            return (keys[first:first + rows, :, :start + q],
                    values[first:first + rows, :, :start + q])
        keys[self._rows, :, self._positions] = k[:, :, 0]
        values[self._rows, :, self._positions] = v[:, :, 0]
        return keys[:self._batch, :, :self._kv_len], values[:self._batch, :, :self._kv_len]

    def move(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``source`` into slot ``target``."""
        for keys, values in zip(self.keys, self.values):
            keys[target, :, :length] = keys[source, :, :length]
            values[target, :, :length] = values[source, :, :length]

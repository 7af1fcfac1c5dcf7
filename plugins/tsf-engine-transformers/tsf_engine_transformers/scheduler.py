"""The step loop: iteration-level (continuous) batching over a causal LM.

Each step (:meth:`Scheduler.step`) first applies what arrived since the last one (new requests,
cancellations: a cancelled sequence frees its slot at once), then prefills waiting prompts
within a token budget (``prefill_chunk`` tokens a step, so decoding sequences never stall for
long: short prompts right-padded into one forward, a long one in chunks), and then runs one
decode step for every decoding sequence, those that just joined included.  A sequence that
finishes leaves at once; its slot goes to the next one waiting.  Output leaves through the
outbox once per step.

Each sequence owns a slot of the :class:`~tsf_engine_transformers.kv_cache.SlotCache` from its
prefill to its end; decoding sequences hold slots ``0..B``, and a long prompt being prefilled
in chunks the slot just above them.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any

import torch

from tsf.errors import ClientGone, HandlerError, OutOfResources
from tsf.generation.engine import EngineStats, Outbox
from tsf.generation.request import GenerationRequest

from .forward import make_forward
from .kv_cache import SlotCache
from .sampling import pick
from .text import TextStream

log = logging.getLogger("tsf.engine.transformers")


class Sequence:
    """One choice of one request, from its prompt to its last token."""

    __slots__ = ("request", "choice", "prompt", "params", "generator", "banned", "stop_ids",
                 "out", "slot", "cached", "text", "finish_reason", "first_at", "last_at",
                 "gaps")

    def __init__(self, request: "Pending", choice: int, prompt: list[int], generator: Any,
                 text: TextStream, stop_ids: set[int]) -> None:
        self.request = request
        self.choice = choice
        self.prompt = prompt
        self.params = request.request.params
        self.generator = generator
        self.stop_ids = stop_ids
        self.banned: list[int] = sorted(stop_ids) if self.params.min_tokens > 0 else []
        self.out: list[int] = []
        self.slot = -1
        self.cached = 0  # tokens whose keys and values are in the slot
        self.text = text
        self.finish_reason: str | None = None
        self.first_at: float | None = None
        self.last_at = 0.0
        self.gaps: list[float] = []


class Pending:
    """One request: its sequences, and what its answer needs."""

    __slots__ = ("key", "request", "sequences", "left", "prompt_tokens", "submitted")

    def __init__(self, key: Any, request: GenerationRequest, prompt_tokens: int) -> None:
        self.key = key
        self.request = request
        self.sequences: list[Sequence] = []
        self.left = 0
        self.prompt_tokens = prompt_tokens
        self.submitted = time.perf_counter()

    def answer(self) -> dict:
        first = min((s.first_at for s in self.sequences if s.first_at is not None),
                    default=None)
        stream = self.request.stream
        return {"choices": [{"index": s.choice, "text": "" if stream else s.text.text,
                             "finish_reason": s.finish_reason, "token_ids": s.out}
                            for s in self.sequences],
                "usage": {"prompt_tokens": self.prompt_tokens,
                          "completion_tokens": sum(len(s.out) for s in self.sequences)},
                "timing": {"ttft": None if first is None else round(first - self.submitted, 6),
                           "itl": [round(g, 6) for s in self.sequences for g in s.gaps]}}


class Scheduler:
    """Runs the steps of one model's sequences on a thread of its own."""

    def __init__(self, model: Any, slots: int, max_len: int, device: Any, *,
                 prefill_chunk: int = 256, prefill_batch: int = 8) -> None:
        self.device = device
        self.slots, self.max_len = slots, max_len
        self.prefill_chunk, self.prefill_batch = prefill_chunk, prefill_batch
        dtype = next(model.parameters()).dtype
        self.cache = SlotCache(model.config, slots, max_len, dtype, device)
        self.forward = make_forward(model, self.cache)
        self.outbox: Outbox | None = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.decoding: list[Sequence] = []  # decoding[i].slot == i
        self.chunked: Sequence | None = None  # a long prompt prefilled a chunk per step
        self.requests: dict[Any, Pending] = {}
        self._steps: collections.Counter[int] = collections.Counter()
        self._steps_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- from other threads -----------------------------------------------------------------
    def start(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._thread = threading.Thread(target=self._run, name="tsf-engine", daemon=True)
        self._thread.start()

    def add(self, pending: Pending) -> None:
        self._inbox.put(("add", pending))
        self._wake.set()

    def cancel(self, key: Any) -> None:
        self._inbox.put(("cancel", key))
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def stats(self) -> EngineStats:
        with self._steps_lock:
            steps, self._steps = dict(self._steps), collections.Counter()
        decoding, chunked = list(self.decoding), self.chunked
        used = sum(s.cached for s in decoding) + (chunked.cached if chunked else 0)
        return EngineStats(running=len(decoding) + (chunked is not None),
                           waiting=len(self.waiting), cache_used=used,
                           cache_total=self.slots * self.max_len, steps=steps)

    # --- the engine's thread ----------------------------------------------------------------
    def _run(self) -> None:
        while not self._closed:
            if self.requests or not self._inbox.empty():
                try:
                    self.step()
                except Exception as exc:  # fail what it held; keep serving
                    self._fail_all(exc)
            else:
                self._wake.wait(0.5)
                self._wake.clear()

    @torch.inference_mode()
    def step(self) -> None:
        """One iteration: arrivals and cancellations, prefill, one decode step, output."""
        self._take_inbox()
        self._prefill()
        if self.decoding:
            self._decode()
        self.outbox.flush()  # type: ignore[union-attr]

    def _take_inbox(self) -> None:
        while True:
            try:
                what, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if what == "add":
                self.requests[item.key] = item
                self.waiting.extend(item.sequences)
            else:
                self._cancel(item)

    def _cancel(self, key: Any) -> None:
        pending = self.requests.pop(key, None)
        if pending is None:
            return
        mine = set(map(id, pending.sequences))
        self.waiting = collections.deque(s for s in self.waiting if id(s) not in mine)
        if self.chunked is not None and id(self.chunked) in mine:
            self.chunked = None
        for index in range(len(self.decoding) - 1, -1, -1):
            if id(self.decoding[index]) in mine:
                self._leave(index)
        self.outbox.failed(key, ClientGone("the client went away; generation stopped"))  # type: ignore[union-attr]

    # --- prefill ----------------------------------------------------------------------------
    def _used(self) -> int:
        return len(self.decoding) + (self.chunked is not None)

    def _prefill(self) -> None:
        budget = self.prefill_chunk
        if self.chunked is not None:
            budget -= self._chunk(self.chunked, budget)
        while budget > 0 and self.waiting and self.chunked is None and self._used() < self.slots:
            head = self.waiting[0]
            if len(head.prompt) > budget:
                if budget < self.prefill_chunk:
                    return  # a long prompt starts on a fresh budget
                self.waiting.popleft()
                head.slot = len(self.decoding)
                self.chunked = head
                self._chunk(head, budget)
                return
            group: list[Sequence] = []
            room = min(self.slots - self._used(), self.prefill_batch)
            for sequence in self.waiting:
                longest = max([len(g.prompt) for g in group] + [len(sequence.prompt)])
                if len(group) >= room or longest * (len(group) + 1) > budget:
                    break
                group.append(sequence)
            if not group:
                return
            for _ in group:
                self.waiting.popleft()
            budget -= self._prefill_group(group)

    def _prefill_group(self, group: list[Sequence]) -> int:
        """Short prompts, right-padded into one forward, written into slots ``B..B+n``."""
        first, lengths = len(self.decoding), [len(s.prompt) for s in group]
        longest = max(lengths)
        ids = torch.zeros(len(group), longest, dtype=torch.long)
        for row, sequence in enumerate(group):
            ids[row, :lengths[row]] = torch.tensor(sequence.prompt)
            sequence.slot = first + row
        positions = torch.arange(longest).expand(len(group), longest)
        self.cache.prefill(first, len(group), 0)
        last = None if len(group) == 1 else torch.tensor(lengths, device=self.device) - 1
        logits = self.forward(ids.to(self.device), positions.to(self.device), None, last)
        tokens = pick(logits, group)
        for sequence, token in zip(group, tokens):
            sequence.cached = len(sequence.prompt)
            self._join(sequence, token)
        return len(group) * longest

    def _chunk(self, sequence: Sequence, budget: int) -> int:
        """The next ``budget`` tokens at most of a long prompt; it joins once all are in."""
        start = sequence.cached
        piece = sequence.prompt[start:start + budget]
        length = len(piece)
        positions = torch.arange(start, start + length, device=self.device).view(1, length)
        mask = None
        if start:  # query i (at start + i) sees keys 0..start + i
            mask = (torch.arange(start + length, device=self.device)[None, :]
                    <= positions.view(length, 1)).view(1, 1, length, start + length)
        self.cache.prefill(sequence.slot, 1, start)
        logits = self.forward(torch.tensor([piece], device=self.device), positions, mask)
        sequence.cached += length
        if sequence.cached == len(sequence.prompt):
            self.chunked = None
            self._join(sequence, pick(logits, [sequence])[0])
        return length

    def _join(self, sequence: Sequence, token: int) -> None:
        """A prefilled sequence takes its first token and joins the decoding ones."""
        target = len(self.decoding)
        if sequence.slot != target:
            self.cache.move(sequence.slot, target, sequence.cached)
            sequence.slot = target
        self.decoding.append(sequence)
        if self._emit(sequence, token):
            self._leave(target)

    # --- decode -----------------------------------------------------------------------------
    def _decode(self) -> None:
        batch = len(self.decoding)
        ids = torch.tensor([[s.out[-1]] for s in self.decoding], device=self.device)
        positions = torch.tensor([s.cached for s in self.decoding], device=self.device)
        kv_len = int(positions.max()) + 1
        mask = (torch.arange(kv_len, device=self.device)[None, :]
                <= positions[:, None]).view(batch, 1, 1, kv_len)
        self.cache.decode(batch, positions, kv_len)
        logits = self.forward(ids, positions.view(batch, 1), mask)
        tokens = pick(logits, self.decoding)
        with self._steps_lock:
            self._steps[batch] += 1
        done = []
        for index, (sequence, token) in enumerate(zip(self.decoding, tokens)):
            sequence.cached += 1
            if self._emit(sequence, token):
                done.append(index)
        for index in reversed(done):  # from the end: the indexes stay valid as slots move
            self._leave(index)

    def _emit(self, sequence: Sequence, token: int) -> bool:
        """Record ``token``; True if the sequence has ended."""
        now = time.perf_counter()
        if sequence.first_at is None:
            sequence.first_at = now
        else:
            sequence.gaps.append(now - sequence.last_at)
        sequence.last_at = now
        sequence.out.append(token)
        params, reason, text = sequence.params, None, ""
        if token in sequence.stop_ids:
            reason = "stop"
        else:
            text, stopped = sequence.text.add(token)
            reason = "stop" if stopped else None
        if reason is None and (len(sequence.out) >= (params.max_tokens or self.max_len)
                               or sequence.cached >= self.max_len):
            reason = "length"
        if reason is not None and not (reason == "stop" and token not in sequence.stop_ids):
            text += sequence.text.finish()
        if sequence.banned and len(sequence.out) >= params.min_tokens:
            sequence.banned = []
        pending = sequence.request
        if text and pending.request.stream:
            self.outbox.text(pending.key, sequence.choice, text)  # type: ignore[union-attr]
        if reason is None:
            return False
        sequence.finish_reason = reason
        pending.left -= 1
        if pending.left == 0 and self.requests.pop(pending.key, None) is not None:
            self.outbox.done(pending.key, pending.answer())  # type: ignore[union-attr]
        return True

    def _leave(self, index: int) -> None:
        """Free decoding slot ``index``: the last decoding sequence moves into it."""
        last = len(self.decoding) - 1
        if index != last:
            mover = self.decoding[last]
            self.cache.move(mover.slot, index, mover.cached)
            mover.slot = index
            self.decoding[index] = mover
        self.decoding.pop()

    def _fail_all(self, exc: Exception) -> None:
        """A step failed: every request held fails with it; the engine starts afresh."""
        log.exception("the engine's step failed; failing the %d request(s) it held",
                      len(self.requests))
        name = type(exc).__name__
        out_of_memory = isinstance(exc, MemoryError) or name == "OutOfMemoryError"
        error = OutOfResources(f"out of memory while generating: {exc}") if out_of_memory \
            else HandlerError(f"the engine failed while generating: {name}: {exc}")
        for key in list(self.requests):
            self.outbox.failed(key, error)  # type: ignore[union-attr]
        self.requests.clear()
        self.waiting.clear()
        self.decoding.clear()
        self.chunked = None
        self.outbox.flush()  # type: ignore[union-attr]

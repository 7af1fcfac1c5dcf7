"""Embeddings from an encoder model (a sentence-transformers folder such as all-MiniLM-L6-v2).

Requests queue on a thread of their own; each pass takes every request waiting (up to
``max_batch_inputs`` texts), tokenizes them together, runs the encoder once and pools each
text's token states: the mean over its real tokens (or its first token, when the folder's
``1_Pooling/config.json`` says ``pooling_mode_cls_token``), L2-normalized when the folder's
``modules.json`` lists a ``Normalize`` module, as sentence-transformers computes them.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import Any

from tsf.errors import ClientGone, HandlerError, ModelLoadError
from tsf.generation.engine import Engine, EngineStats, Outbox
from tsf.generation.request import EMBEDDING, GenerationRequest, InvalidRequest

log = logging.getLogger("tsf.engine.transformers")


class EmbeddingEngine(Engine):
    """Pooled sentence embeddings, many requests per forward."""

    def __init__(self, model: Any, tokenizer: Any, device: Any, *, cls_pooling: bool,
                 normalize: bool, max_len: int, max_batch_inputs: int = 256) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.cls_pooling, self.normalize = cls_pooling, normalize
        self.max_len, self.max_batch_inputs = max_len, max_batch_inputs
        self.max_sequences = max_batch_inputs
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled: set[Any] = set()
        self._lock = threading.Lock()
        self._waiting = 0
        self._outbox: Outbox | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def create(cls, context: Any, options: dict) -> Engine:
        from .engine import model_folder

        return cls.load(model_folder(context, options), context.device, options)

    @classmethod
    def load(cls, folder: Path, device: Any, options: dict) -> EmbeddingEngine:
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"cannot load the encoder in {folder}: {type(exc).__name__}: "
                                 f"{exc}") from None
        pooling = _read_json(folder / "1_Pooling" / "config.json")
        modules = _read_json(folder / "modules.json") or []
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules
                        if isinstance(m, dict))
        limit = int(getattr(model.config, "max_position_embeddings", 512) or 512)
        engine = cls(model.to(device).eval(), tokenizer, device,
                     cls_pooling=bool(pooling.get("pooling_mode_cls_token")),
                     normalize=normalize, max_len=int(options.get("max_model_len") or limit))
        log.info("transformers embedding engine: %s, %s pooling%s", type(model).__name__,
                 "CLS" if engine.cls_pooling else "mean", ", normalized" if normalize else "")
        return engine

    def start(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._thread = threading.Thread(target=self._run, name="tsf-embeddings", daemon=True)
        self._thread.start()

    def submit(self, key: Any, request: GenerationRequest) -> None:
        if request.kind != EMBEDDING:
            raise InvalidRequest("this model computes embeddings; it does not generate text "
                                 "(send its requests to /v1/embeddings)", "model")
        texts = []
        for i, item in enumerate(request.prompts or ()):
            if not isinstance(item, str):
                texts.append(self.tokenizer.decode(item))
            else:
                texts.append(item)
        with self._lock:
            self._waiting += 1
        self._queue.put((key, texts))

    def cancel(self, key: Any) -> None:
        with self._lock:
            self._cancelled.add(key)

    def stats(self) -> EngineStats:
        return EngineStats(running=0, waiting=self._waiting)

    def close(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, count = [item], len(item[1])
            while count < self.max_batch_inputs:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
                count += len(more[1])
            self._answer(batch)

    def _answer(self, batch: list[tuple[Any, list[str]]]) -> None:
        outbox = self._outbox
        assert outbox is not None
        with self._lock:
            self._waiting -= len(batch)
            cancelled = {key for key, _ in batch if key in self._cancelled}
            self._cancelled -= cancelled
        for key in cancelled:
            outbox.failed(key, ClientGone("the client went away"))
        batch = [(key, texts) for key, texts in batch if key not in cancelled]
        try:
            vectors, counts = self._embed([t for _, texts in batch for t in texts])
        except Exception as exc:  # fail this pass's requests, keep serving
            log.exception("computing embeddings failed")
            for key, _ in batch:
                outbox.failed(key, HandlerError(f"computing embeddings failed: {exc}"))
            outbox.flush()
            return
        start = 0
        for key, texts in batch:
            end = start + len(texts)
            outbox.done(key, {"data": vectors[start:end],
                              "usage": {"prompt_tokens": sum(counts[start:end])}})
            start = end
        outbox.flush()

    def _embed(self, texts: list[str]) -> tuple[list[list[float]], list[int]]:
        import torch

        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len,
                                 return_tensors="pt").to(self.device)
        with torch.inference_mode():
            states = self.model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
        if self.cls_pooling:
            pooled = states[:, 0]
        else:
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        counts = encoded["attention_mask"].sum(dim=1).tolist()
        return pooled.float().cpu().tolist(), [int(c) for c in counts]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}

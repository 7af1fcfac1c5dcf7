"""The ``transformers`` engine: what tsf builds for a model folder served with it.

A causal LM (``*ForCausalLM``) generates through the continuous-batching
:class:`~tsf_engine_transformers.scheduler.Scheduler`; any other model (a sentence encoder such
as MiniLM) computes embeddings (:mod:`~tsf_engine_transformers.embeddings`).

Options (model-config.yaml's ``handler`` mapping): ``model_path`` (the folder, relative to the
archive), ``max_model_len`` (tokens per sequence, prompt included; default the model's
``max_position_embeddings``, at most 2048), ``dtype`` (``float32``, the default, whose greedy
output equals ``model.generate``'s token for token; ``bfloat16`` or ``float16`` for speed),
``prefill_chunk`` (prompt tokens prefilled per step, default 256), ``max_prefill_batch``
(prompts prefilled together, default 8).  ``maxNumSequence`` sets the slots.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tsf.errors import ModelLoadError
from tsf.generation.engine import Engine, EngineStats, Outbox
from tsf.generation.request import EMBEDDING, GenerationRequest, InvalidRequest

log = logging.getLogger("tsf.engine.transformers")

DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_MAX_LEN = 2048


def model_folder(context: Any, options: dict) -> Path:
    """The Hugging Face folder to load: ``model_path`` under the archive, else its root."""
    root = Path(context.model_dir).resolve()
    path = (root / str(options.get("model_path") or ".")).resolve()
    if not path.is_relative_to(root):
        raise ModelLoadError(f"handler.model_path {options.get('model_path')!r} leaves the "
                             "archive")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face model folder (no config.json)")
    return path


def _positive(options: dict, key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelLoadError(f"model-config.yaml: handler.{key} must be an integer >= 1, got "
                             f"{value!r:.60}")
    return value


class TransformersEngine(Engine):
    """Serves a transformers model: generation or embeddings."""

    def __init__(self, model: Any, tokenizer: Any, options: dict, device: Any) -> None:
        import torch

        from .scheduler import Scheduler

        self.model, self.tokenizer, self.device = model, tokenizer, device
        config = model.config
        self.vocab_size = int(getattr(config, "vocab_size", 0) or len(tokenizer))
        limit = int(getattr(config, "max_position_embeddings", 0) or DEFAULT_MAX_LEN)
        self.max_len = _positive(options, "max_model_len", min(limit, DEFAULT_MAX_LEN))
        self.max_sequences = _positive(options, "max_num_sequence", 32)
        self.scheduler = Scheduler(model, self.max_sequences, self.max_len, device,
                                   prefill_chunk=_positive(options, "prefill_chunk", 256),
                                   prefill_batch=_positive(options, "max_prefill_batch", 8))
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set([eos] if isinstance(eos, int) else (eos or []))
        log.info("transformers engine: %s, %s, %d slots of %d tokens (KV cache %.1f MiB), "
                 "%s forward, %d threads", type(model).__name__, next(model.parameters()).dtype,
                 self.max_sequences, self.max_len, self.scheduler.cache.nbytes / 2**20,
                 type(self.scheduler.forward).__name__, torch.get_num_threads())

    @classmethod
    def create(cls, context: Any, options: dict) -> Engine:
        folder = model_folder(context, options)
        dtype_name = str(options.get("dtype", "float32"))
        if dtype_name not in DTYPES:
            raise ModelLoadError(f"model-config.yaml: handler.dtype must be one of "
                                 f"{', '.join(DTYPES)}, got {dtype_name!r:.60}")
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"cannot read {folder / 'config.json'}: {exc}") from None
        device = context.device
        architectures = getattr(config, "architectures", None) or []
        if not any(a.endswith("ForCausalLM") for a in architectures):
            from .embeddings import EmbeddingEngine

            return EmbeddingEngine.load(folder, device, options)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=getattr(torch, dtype_name), local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"cannot load the model in {folder}: {type(exc).__name__}: "
                                 f"{exc}") from None
        return cls(model.to(device).eval(), tokenizer, options, device)

    def start(self, outbox: Outbox) -> None:
        self.scheduler.start(outbox)

    def submit(self, key: Any, request: GenerationRequest) -> None:
        from .sampling import make_generator
        from .scheduler import Pending, Sequence
        from .text import TextStream, prompt_ids

        if request.kind == EMBEDDING:
            raise InvalidRequest("this model generates text; it does not compute embeddings "
                                 "(serve an encoder model for /v1/embeddings)", "model")
        prompts = prompt_ids(self.tokenizer, request, self.vocab_size)
        params = request.params
        longest = max(len(p) for p in prompts)
        where = "messages" if request.messages is not None else "prompt"
        if longest >= self.max_len:
            raise InvalidRequest(
                f"this model's maximum context length is {self.max_len} tokens; your {where} "
                f"resulted in {longest} tokens (leave room for at least one token to generate)",
                where, "context_length_exceeded")
        if params.max_tokens is not None and longest + params.max_tokens > self.max_len:
            raise InvalidRequest(
                f"this model's maximum context length is {self.max_len} tokens; you requested "
                f"{longest + params.max_tokens} tokens ({longest} in the {where}, "
                f"{params.max_tokens} in the completion)", "max_tokens",
                "context_length_exceeded")
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_ids)
        pending = Pending(key, request, sum(len(p) for p in prompts))
        choice = 0
        for prompt in prompts:
            for _ in range(request.n):
                generator = None if params.greedy else \
                    make_generator(params.seed, choice, self.device)
                pending.sequences.append(Sequence(pending, choice, prompt, generator,
                                                  TextStream(self.tokenizer, prompt,
                                                             params.stop), stop_ids))
                choice += 1
        pending.left = len(pending.sequences)
        self.scheduler.add(pending)

    def cancel(self, key: Any) -> None:
        self.scheduler.cancel(key)

    def stats(self) -> EngineStats:
        return self.scheduler.stats()

    def close(self) -> None:
        self.scheduler.close()

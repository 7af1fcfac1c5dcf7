"""The ``vllm`` engine: vLLM's ``AsyncLLMEngine`` on an asyncio loop of its own thread.

tsf renders prompts itself (the tokenizer's chat template) and hands vLLM token ids, so the
OpenAI shapes, errors, metrics and cancellation are tsf's whatever the engine.  Each prompt of a
request is one vLLM request (``n`` choices); a cancelled request is aborted in vLLM, which frees
its KV blocks at its next step.

Options (model-config.yaml's ``handler`` mapping): ``model_path``, ``max_model_len`` and
``vllm_engine_config`` (any ``AsyncEngineArgs`` field, as in TorchServe's vLLM example);
``maxNumSequence`` is vLLM's ``max_num_seqs``; ``deviceIds`` picks the GPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from tsf.errors import ClientGone, HandlerError, ModelLoadError, TsfError
from tsf.generation.engine import Engine, EngineStats, Outbox
from tsf.generation.request import CHAT, EMBEDDING, GenerationRequest, InvalidRequest

from .convert import Choices, sampling_arguments

log = logging.getLogger("tsf.engine.vllm")

MISSING = ("the vllm engine needs vLLM, which is not installed in this environment: "
           "pip install 'tsf-engine-vllm[vllm]' on Linux with a CUDA GPU, or serve the model "
           "with the transformers engine (handler: {engine: transformers}, or tsf serve "
           "--llm-engine transformers)")


def import_vllm() -> Any:
    """vLLM, or a ModelLoadError that says how to get it."""
    try:
        import vllm
    except ImportError as exc:
        raise ModelLoadError(f"{MISSING} ({exc})") from None
    return vllm


class VLLMEngine(Engine):
    """Serves a causal LM with vLLM."""

    def __init__(self, vllm: Any, engine: Any, tokenizer: Any, max_len: int,
                 max_sequences: int, loop: asyncio.AbstractEventLoop) -> None:
        self.vllm, self.engine, self.tokenizer = vllm, engine, tokenizer
        self.max_len, self.max_sequences, self.loop = max_len, max_sequences, loop
        self.outbox: Outbox | None = None
        self._tasks: dict[Any, asyncio.Task] = {}

    @classmethod
    def create(cls, context: Any, options: dict) -> Engine:
        root = Path(context.model_dir).resolve()
        folder = (root / str(options.get("model_path") or ".")).resolve()
        if not folder.is_relative_to(root) or not (folder / "config.json").is_file():
            raise ModelLoadError(f"{folder} is not a Hugging Face model folder inside the "
                                 "archive (no config.json)")
        ids = context.model_config.get("deviceIds") or []
        if ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(ids[context.worker_index % len(ids)])
        vllm = import_vllm()
        extra = options.get("vllm_engine_config") or {}
        if not isinstance(extra, dict):
            raise ModelLoadError("model-config.yaml: handler.vllm_engine_config must be a "
                                 "mapping of AsyncEngineArgs fields")
        arguments = dict(extra, model=str(folder))
        arguments["max_num_seqs"] = int(options.get("max_num_sequence") or
                                        extra.get("max_num_seqs") or 256)
        if options.get("max_model_len"):
            arguments["max_model_len"] = int(options["max_model_len"])
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="tsf-vllm", daemon=True).start()

        async def build() -> tuple[Any, Any, int]:
            engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**arguments))
            tokenizer = await engine.get_tokenizer()
            config = await engine.get_model_config()
            return engine, tokenizer, int(config.max_model_len)

        try:
            engine, tokenizer, max_len = asyncio.run_coroutine_threadsafe(build(), loop).result()
        except TsfError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"vLLM could not load {folder}: {type(exc).__name__}: "
                                 f"{exc}") from None
        log.info("vllm engine: %s, max_model_len %d, max_num_seqs %d", folder, max_len,
                 arguments["max_num_seqs"])
        return cls(vllm, engine, tokenizer, max_len, arguments["max_num_seqs"], loop)

    def start(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def submit(self, key: Any, request: GenerationRequest) -> None:
        if request.kind == EMBEDDING:
            raise InvalidRequest("the vllm engine serves text generation here; serve "
                                 "embeddings with the transformers engine", "model")
        prompts = self._prompts(request)
        for ids in prompts:
            if len(ids) >= self.max_len or (request.params.max_tokens is not None and
                                            len(ids) + request.params.max_tokens > self.max_len):
                raise InvalidRequest(
                    f"this model's maximum context length is {self.max_len} tokens; the prompt "
                    f"has {len(ids)} and max_tokens asks for {request.params.max_tokens}",
                    "max_tokens" if len(ids) < self.max_len else "prompt",
                    "context_length_exceeded")
        self.loop.call_soon_threadsafe(self._begin, key, request, prompts)

    def _prompts(self, request: GenerationRequest) -> list[list[int]]:
        if request.kind == CHAT:
            try:
                ids = self.tokenizer.apply_chat_template(request.messages, tokenize=True,
                                                         add_generation_prompt=True)
            except Exception as exc:
                raise InvalidRequest(f"the model's chat template refused these messages: "
                                     f"{exc}", "messages") from None
            return [list(ids)]
        return [list(self.tokenizer(p)["input_ids"]) if isinstance(p, str) else list(p)
                for p in request.prompts or ()]

    def _begin(self, key: Any, request: GenerationRequest, prompts: list[list[int]]) -> None:
        self._tasks[key] = self.loop.create_task(self._generate(key, request, prompts))

    async def _generate(self, key: Any, request: GenerationRequest,
                        prompts: list[list[int]]) -> None:
        outbox = self.outbox
        assert outbox is not None
        started, first, gaps, last = time.perf_counter(), None, [], {}
        ids = [f"{key[0]}-{key[1]}-{i}" for i in range(len(prompts))]
        choices = [Choices(i * request.n) for i in range(len(prompts))]

        async def one(i: int) -> None:
            nonlocal first
            arguments = sampling_arguments(request.params, request.n, len(prompts[i]),
                                           self.max_len)
            stream = self.engine.generate({"prompt_token_ids": prompts[i]},
                                          self.vllm.SamplingParams(**arguments), ids[i])
            async for output in stream:
                now = time.perf_counter()
                for choice, text in choices[i].update(output.outputs):
                    first = first or now
                    if choice in last:
                        gaps.append(round(now - last[choice], 6))
                    last[choice] = now
                    if request.stream:
                        outbox.text(key, choice, text)
                outbox.flush()

        try:
            await asyncio.gather(*(one(i) for i in range(len(prompts))))
        except asyncio.CancelledError:
            for request_id in ids:
                await self.engine.abort(request_id)
            outbox.failed(key, ClientGone("the client went away; generation stopped"))
            outbox.flush()
            return
        except Exception as exc:
            log.exception("vLLM failed a request")
            outbox.failed(key, HandlerError(f"vLLM failed: {type(exc).__name__}: {exc}"))
            outbox.flush()
            return
        finally:
            self._tasks.pop(key, None)
        answer_choices = [c for group in choices for c in group.answer_choices(request.stream)]
        outbox.done(key, {"choices": answer_choices,
                          "usage": {"prompt_tokens": sum(len(p) for p in prompts),
                                    "completion_tokens": sum(len(c["token_ids"])
                                                             for c in answer_choices)},
                          "timing": {"ttft": None if first is None else first - started,
                                     "itl": gaps}})
        outbox.flush()

    def cancel(self, key: Any) -> None:
        def stop() -> None:
            task = self._tasks.get(key)
            if task is not None:
                task.cancel()

        self.loop.call_soon_threadsafe(stop)

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self._tasks))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)

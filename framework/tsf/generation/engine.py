"""The interface of a generation engine, and the outbox it reports through.

An engine plugin registers classes through ``tsf_register_engines`` (``{name: class}``); the
``llm`` handler builds the one a model asks for with :meth:`Engine.create`.  The worker's engine
loop (:mod:`tsf.runtime.engine_loop`) hands it requests as they arrive (:meth:`Engine.submit`,
from the loop's thread, at any time) and cancels those whose client left
(:meth:`Engine.cancel`).  The engine computes on threads of its own and reports through the
:class:`Outbox`: each request's text as it is made (streamed requests only), then its final
answer (or error).  It calls :meth:`Outbox.flush` once per step, so the tokens of one step leave
the worker in one write.

A request is known by its ``key``; its answer must come exactly once, whatever happens
(cancelled requests answer :class:`tsf.errors.ClientGone`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from ..errors import TsfError
from .request import GenerationRequest


class Outbox(abc.ABC):
    """Where an engine's output goes (thread safe)."""

    @abc.abstractmethod
    def text(self, key: Any, choice: int, text: str) -> None:
        """More text of choice ``choice`` of streamed request ``key``."""

    @abc.abstractmethod
    def done(self, key: Any, answer: dict) -> None:
        """Request ``key``'s final answer (see :mod:`tsf.generation.request` for its shape)."""

    @abc.abstractmethod
    def failed(self, key: Any, error: TsfError) -> None:
        """Request ``key`` failed with ``error`` (a 400 for a prompt over the context...)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Send what was reported since the last flush."""


@dataclass
class EngineStats:
    """What an engine reports about its load: sequences computing and waiting in the engine,
    KV-cache tokens in use and available, and decode steps by how many sequences each
    carried since the last report."""

    running: int = 0
    waiting: int = 0
    cache_used: int = 0
    cache_total: int = 0
    steps: dict[int, int] | None = None

    def to_wire(self) -> dict:
        return {"running": self.running, "waiting": self.waiting,
                "cache_used": self.cache_used, "cache_total": self.cache_total,
                "steps": {str(k): v for k, v in (self.steps or {}).items()}}


class Engine(abc.ABC):
    """A generation (or embedding) engine serving one model in one worker."""

    #: sequences it computes at once at most (``maxNumSequence``)
    max_sequences: int = 1

    @classmethod
    @abc.abstractmethod
    def create(cls, context: Any, options: dict) -> Engine:
        """Load the model of ``context`` (its ``model_dir`` holds a Hugging Face folder) with
        ``options``, the model-config's ``llm`` mapping plus ``max_num_sequence``; raise
        :class:`tsf.errors.ModelLoadError` with a clear message when it cannot."""

    @abc.abstractmethod
    def start(self, outbox: Outbox) -> None:
        """Begin serving; output goes to ``outbox``."""

    @abc.abstractmethod
    def submit(self, key: Any, request: GenerationRequest) -> None:
        """Take a request (thread safe); its answer comes through the outbox."""

    @abc.abstractmethod
    def cancel(self, key: Any) -> None:
        """Stop request ``key`` at the next step, free what it holds and answer it
        ClientGone (thread safe; nothing if it is already answered)."""

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """The current load, and the decode steps since the last call (thread safe)."""

    def close(self) -> None:
        """Stop computing (the worker is exiting)."""

"""The ``llm`` handler: serves a Hugging Face model folder through an engine plugin.

The archive (or the folder ``tsf serve --llm`` names) holds the model's ``config.json``, weights
and tokenizer files.  model-config.yaml's ``handler`` mapping chooses the engine and its
options, as TorchServe's vLLM example does::

    maxNumSequence: 32          # sequences computed at once per worker
    handler:
      engine: transformers      # or vllm (default for TorchServe's vllm_handler)
      model_path: weights/      # the model folder, relative to the archive (default: its root)
      max_model_len: 2048       # tokens per sequence, prompt included
      dtype: float32            # transformers: float32 (default), bfloat16, float16
      vllm_engine_config: {...} # vllm: any AsyncEngineArgs field

The worker runs such a model in engine mode (:mod:`tsf.runtime.engine_loop`): requests are taken
as they come and answered as they finish, never batch by batch.
"""

from __future__ import annotations

from typing import Any

from .. import hookimpl
from ..errors import ModelLoadError
from .engine import Engine

ENGINE_HANDLERS = ("llm", "vllm_handler")  # the handler names served in engine mode
DEFAULT_ENGINE = {"llm": "transformers", "vllm_handler": "vllm"}
ENGINE_PLUGINS = {"transformers": "tsf-engine-transformers", "vllm": "tsf-engine-vllm"}
DEFAULT_MAX_SEQUENCES = 32


def engine_options(model_config: dict, handler: str = "llm") -> dict:
    """The engine's options from model-config.yaml (its ``handler`` mapping), with the engine's
    name under ``engine``."""
    options = model_config.get("handler")
    options = dict(options) if isinstance(options, dict) else {}
    options.setdefault("engine", DEFAULT_ENGINE.get(handler, "transformers"))
    return options


def engine_class(name: str, pm: Any = None) -> type[Engine]:
    """The engine class plugins register under ``name``; a clear ModelLoadError otherwise."""
    from ..plugins import WORKER_BUILTINS, create_manager, resolve_class

    pm = pm or create_manager(WORKER_BUILTINS)
    engines: dict[str, Any] = {}
    for found in reversed(pm.hook.tsf_register_engines()):
        engines.update(found or {})
    if name not in engines:
        plugin = ENGINE_PLUGINS.get(name)
        hint = f"pip install {plugin}" if plugin else "install the plugin that provides it"
        known = ", ".join(sorted(engines)) or "none"
        raise ModelLoadError(f"no generation engine named {name!r} is installed ({hint}); "
                             f"installed engines: {known}")
    try:
        return resolve_class(engines[name])
    except ImportError as exc:
        raise ModelLoadError(f"the {name} engine could not be imported: {exc}") from None


class LLMHandler:
    """Loads the engine a model-config asks for; the worker's engine loop drives it."""

    name = "llm"

    @hookimpl
    def tsf_load_model(self, context: Any) -> Any:
        options = engine_options(context.model_config, self.name)
        options["max_num_sequence"] = int(context.model_config.get("maxNumSequence") or
                                          DEFAULT_MAX_SEQUENCES)
        cls = engine_class(str(options["engine"]))
        return cls.create(context, options)


class VLLMHandler(LLMHandler):
    """TorchServe's ``vllm_handler`` name: the ``llm`` handler with the vLLM engine."""

    name = "vllm_handler"


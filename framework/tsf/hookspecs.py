"""The hook specifications of tsf (pluggy project name ``tsf``).

Hooks are grouped by where they run:

* **Worker stage hooks** run inside a model's worker process, once per batch.  A handler is an
  object registered into that worker's plugin manager, so its stage hooks apply to its model only.
  They are ``firstresult``: the first implementation that returns something other than ``None``
  answers.  Cross-cutting plugins can wrap any stage with ``@hookimpl(wrapper=True)``.
* **Registration hooks** are asked once per process for what plugins contribute (handlers).
* **Storage hooks** run in the front end when a model URL is registered.
* **Metrics hooks** run in the front end.

Every argument is passed by keyword; an implementation may accept any subset of them.
"""

from __future__ import annotations

from typing import Any

import pluggy

from . import PROJECT_NAME

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# --- registration -------------------------------------------------------------------------------

@hookspec
def tsf_register_handlers() -> dict[str, type]:
    """Return ``{handler_name: handler_class}`` for the handlers this plugin provides.

    Called once in each worker process (and by ``tsf plugins``).  The archive manifest names a
    handler; the worker instantiates the class with no arguments and registers the instance as a
    plugin, so that its stage hooks (below) serve that model.  Results of all plugins are merged;
    a later-registered plugin wins a name clash.
    """


@hookspec
def tsf_register_engines() -> dict[str, type]:
    """Return ``{engine_name: engine_class}`` (a class or a lazy ``"module:Class"``) for the
    generation engines this plugin provides (see :class:`tsf.generation.engine.Engine`).

    Called in a worker whose model uses the ``llm`` handler, which builds the engine that the
    model-config's ``handler.engine`` names (``transformers``, ``vllm``).  Results of all plugins
    are merged; a later-registered plugin wins a name clash.
    """


# --- worker stage hooks -------------------------------------------------------------------------

@hookspec(firstresult=True)
def tsf_load_model(context: Any) -> Any:
    """Load the model for ``context`` and return it (any object, usually a ``torch.nn.Module``).

    Runs once when a worker starts, before it reports ready.  ``context.model_dir`` is the
    unpacked archive, ``context.manifest`` its manifest and ``context.model_config`` the parsed
    ``model-config.yaml``.  The returned object is stored as ``context.model``.  Raising makes the
    worker report a load failure, which the register call returns to the client.
    """


@hookspec(firstresult=True)
def tsf_preprocess(context: Any, requests: list[dict]) -> Any:
    """Turn a batch of requests into model input.

    ``requests`` holds one dict per request, whatever protocol brought it (REST, KServe v1,
    gRPC): ``{"body": ...}`` (bytes, parsed JSON or str according to its content type) or one
    key per multipart/form field; a KServe v2 / OIP request has one key per input tensor
    (``context.get_request_protocol(index) == "oip"``).  Headers are available through
    ``context.get_request_header(index, name)``.  Returns the batch passed to
    :func:`tsf_inference`.
    """


@hookspec(firstresult=True)
def tsf_inference(context: Any, batch: Any) -> Any:
    """Run the model on the preprocessed ``batch`` and return raw outputs."""


@hookspec(firstresult=True)
def tsf_postprocess(context: Any, outputs: Any) -> list:
    """Turn raw outputs into one result per request (bytes, str or anything JSON-serialisable).

    The returned list must have exactly one entry per request of the batch; tsf enforces this.
    """


@hookspec(firstresult=True)
def tsf_explain(context: Any, requests: list[dict]) -> list:
    """Explain a batch of requests (``POST /explanations/{model}``); one result per request.

    Returning ``None`` from every implementation makes tsf answer 501 (no explainer).
    """


# --- storage (front end) ------------------------------------------------------------------------

@hookspec(firstresult=True)
def tsf_fetch_archive(url: str, dest: str, config: Any) -> str | None:
    """Resolve a model ``url`` given to ``POST /models`` to a local path.

    ``dest`` is a directory the implementation may write into.  Return the path of the archive
    (a ``.mar``/``.tar.gz`` file or an unpacked directory), or ``None`` if this plugin does not
    handle the URL's scheme.  Raise a :class:`tsf.errors.TsfError` to refuse it.
    """


# --- metrics (front end) ------------------------------------------------------------------------

@hookspec
def tsf_register_metrics(registry: Any) -> None:
    """Add collectors to the ``prometheus_client.CollectorRegistry`` served on ``/metrics``.

    Called once at server start.
    """


@hookspec
def tsf_record_metric(name: str, kind: str, value: float, labels: dict[str, str]) -> None:
    """Observe every metric tsf records (``kind`` is counter, gauge or histogram).

    Called in the front end for built-in metrics and for custom metrics sent by handlers through
    ``context.metrics``; exporter plugins (StatsD, ...) implement it.  Must be cheap.
    """

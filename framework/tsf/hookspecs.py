"""The hook specifications of tsf (pluggy project name ``tsf``).

Hooks are grouped by where they run:

* **Worker stage hooks** run inside a model's worker process, once per batch.  A handler is an
  object registered into that worker's plugin manager, so its stage hooks apply to its model only.
  They are ``firstresult``: the first implementation that returns something other than ``None``
  answers.  Cross-cutting plugins can wrap any stage with ``@hookimpl(wrapper=True)``.
* **Registration hooks** are asked once per process for what plugins contribute (handlers).
* **Storage hooks** run in the front end when a model URL is registered.
* **Metrics hooks** run in the front end.
* **Capture hooks** run in the front end: sinks for captured requests, and the monitoring report
  (``tsf monitor report``).

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


# --- capture and monitoring (front end, command line) -------------------------------------------

@hookspec
def tsf_register_capture_sinks() -> dict[str, type]:
    """Return ``{sink_name: sink_class}`` for the capture sinks this plugin provides.

    A model's ``capture.sinks`` names the sinks its captured records go to.  tsf builds one
    instance per distinct set of options as ``sink_class(options, context)`` (options: the
    mapping under the sink's name; context: a :class:`tsf.monitoring.sinks.SinkContext`); the
    constructor raises :class:`tsf.errors.BadRequest` naming a bad option.  The instance's
    ``write(records)`` is called from a thread of its own with a list of
    :class:`tsf.monitoring.records.CaptureRecord`; raising fails the batch, which is retried
    with backoff.  ``close()`` is called once at shutdown, after the last write.  The built-in
    ``jsonl`` sink writes SageMaker Data Capture files.
    """


@hookspec(firstresult=True)
def tsf_monitor_report(model: str, reference: list[dict], current: list[dict],
                       features: list[str], groups: list[str], output: str, title: str,
                       positive_class: str) -> str | None:
    """Write an HTML monitoring report to ``output`` and return its path.

    Called by ``tsf monitor report``.  ``reference`` and ``current`` are rows (one per captured
    request: the input ``features`` by name, ``prediction``, ``label`` when feedback gave one,
    and ``group.<key>`` for each of ``groups``); ``positive_class`` is the class the per-group
    rates count as selected.  Return ``None`` to leave it to another plugin; tsf-monitor-report
    builds it with Evidently.
    """

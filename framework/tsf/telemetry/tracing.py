"""OpenTelemetry traces of requests and batches; when tracing is off nothing is imported.

Tracing is on when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``, or when an OTLP
endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), unless
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``.  The OTLP protocol comes from
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the
default, or ``grpc``).  The service name (default ``tsf``), resource attributes, sampler and batch
settings are read by the SDK from the standard ``OTEL_*`` variables.

Spans:

* ``{METHOD} {route}`` (kind SERVER) per HTTP request, continuing an incoming W3C
  ``traceparent``, with HTTP semantic-convention attributes (``url.path`` and ``url.query``
  without credentials: :mod:`tsf.telemetry.redaction`; no header but ``User-Agent``);
* ``queue wait``, a child of it, from arrival to dispatch to a worker;
* ``batch {model}`` per batch, linked to the span of every request in it, with children
  ``preprocess``, ``inference`` and ``postprocess`` (or ``explain``) timed in the worker;
* ``node {node}`` per workflow node, a child of the ``/wfpredict`` request's span; that node's
  ``queue wait`` is its child, and its batch links to it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ..workers.messages import BatchResult
from .redaction import redact_query, redact_target

log = logging.getLogger("tsf.tracing")

# monotonic seconds -> wall-clock nanoseconds (queue and batch times are kept monotonic)
_WALL_OFFSET_NS = time.time_ns() - time.monotonic_ns()


def wall_ns(monotonic_seconds: float) -> int:
    return int(monotonic_seconds * 1e9) + _WALL_OFFSET_NS


def tracing_requested(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class Tracing:
    """Tracing switched off: every call returns at once."""

    enabled = False

    def start_request(self, request: Any, route: str, model: str) -> Any:
        return None

    def start_rpc(self, service: str, method: str, headers: dict[str, str], model: str) -> Any:
        return None

    def end_request(self, span: Any, status: int) -> None:
        pass

    def trace_id(self, span: Any) -> str:
        return ""

    def annotate(self, span: Any, attributes: dict[str, Any]) -> None:
        """Add ``attributes`` to a request's span (a generation's token counts)."""

    def start_node(self, parent: Any, workflow: str, node: str) -> Any:
        return None

    def end_node(self, span: Any, status: int) -> None:
        pass

    def record_batch(self, model: str, version: str, worker_id: str, jobs: list,
                     result: BatchResult, started: float, finished: float) -> None:
        pass

    def shutdown(self) -> None:
        pass


class OtelTracing(Tracing):
    """Tracing through the OpenTelemetry SDK and an OTLP (or console) exporter."""

    enabled = True

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.propagate import extract
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from .. import __version__

        attributes = {"service.version": __version__}
        if not os.environ.get("OTEL_SERVICE_NAME") and \
                "service.name=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
            attributes["service.name"] = "tsf"
        resource = Resource.create(attributes)
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(_exporter()))
        self.tracer = self.provider.get_tracer("tsf", __version__)
        self._trace = trace
        self._extract = extract

    def start_request(self, request: Any, route: str, model: str) -> Any:
        kind = self._trace.SpanKind.SERVER
        host, _, port = (request.host or "").partition(":")
        attributes = {"http.request.method": request.method, "http.route": route,
                      "url.path": redact_target(request.path), "url.scheme": request.protocol,
                      "server.address": host, "server.port": int(port or 0),
                      "client.address": request.remote_ip or "",
                      "user_agent.original": request.headers.get("User-Agent", ""),
                      "tsf.model.name": model}
        if request.query:
            attributes["url.query"] = redact_query(request.query)
        return self.tracer.start_span(
            f"{request.method} {route}", context=self._extract(request.headers), kind=kind,
            start_time=int(request._start_time * 1e9), attributes=attributes)

    def start_rpc(self, service: str, method: str, headers: dict[str, str], model: str) -> Any:
        """A SERVER span for one gRPC call, continuing a ``traceparent`` sent as metadata."""
        return self.tracer.start_span(
            f"{service}/{method}", context=self._extract(headers),
            kind=self._trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                        "tsf.model.name": model})

    def end_request(self, span: Any, status: int) -> None:
        self._end(span, "http.response.status_code", status)

    def _end(self, span: Any, attribute: str, status: int) -> None:
        """End ``span`` with its HTTP-equivalent ``status``; 5xx marks it an error."""
        if span is None:
            return
        span.set_attribute(attribute, status)
        if status >= 500:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()

    def annotate(self, span: Any, attributes: dict[str, Any]) -> None:
        if span is not None:
            span.set_attributes(attributes)

    def trace_id(self, span: Any) -> str:
        if span is None:
            return ""
        return format(span.get_span_context().trace_id, "032x")

    def start_node(self, parent: Any, workflow: str, node: str) -> Any:
        """A child span of the workflow request for one node (its queue and batch link here)."""
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(f"node {node}", context=context,
                                      attributes={"tsf.workflow.name": workflow,
                                                  "tsf.workflow.node": node})

    def end_node(self, span: Any, status: int) -> None:
        self._end(span, "tsf.status_code", status)

    def record_batch(self, model: str, version: str, worker_id: str, jobs: list,
                     result: BatchResult, started: float, finished: float) -> None:
        trace = self._trace
        attributes = {"tsf.model.name": model, "tsf.model.version": version,
                      "tsf.worker.id": worker_id}
        links = []
        for job in jobs:
            span = job.trace
            if span is None:
                continue
            links.append(trace.Link(span.get_span_context()))
            queued = self.tracer.start_span(
                "queue wait", context=trace.set_span_in_context(span),
                start_time=wall_ns(job.arrival), attributes=attributes)
            queued.end(end_time=wall_ns(started))
        # the worker may begin a batch that waited in its socket a moment before the front end
        # reads the answer before it: the batch span starts no later than its first stage
        start = min([wall_ns(started), *(int(s[1]) for s in result.stamps or ())])
        batch = self.tracer.start_span(
            f"batch {model}", context=None, links=links, start_time=start,
            attributes=dict(attributes, **{"tsf.batch.size": len(jobs)}))
        parent = trace.set_span_in_context(batch)
        for stage, start_ns, end_ns in result.stamps or ():
            child = self.tracer.start_span(stage, context=parent, start_time=int(start_ns),
                                           attributes=attributes)
            child.end(end_time=int(end_ns))
        batch.end(end_time=wall_ns(finished))

    def shutdown(self) -> None:
        self.provider.shutdown()


def _exporter() -> Any:
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def create_tracing() -> Tracing:
    """The tracing the environment asks for (off by default)."""
    if not tracing_requested():
        return Tracing()
    try:
        tracing = OtelTracing()
    except ImportError as exc:
        log.error("tracing was asked for (OTEL_* variables) but the OpenTelemetry SDK is "
                  "missing (%s): pip install 'tsf-framework[otel]'; continuing without traces",
                  exc)
        return Tracing()
    log.info("OpenTelemetry tracing on")
    return tracing

"""Server metrics on a ``prometheus_client`` registry, served on ``/metrics``.

* TorchServe's counters, under their exact names: ``ts_inference_requests_total``,
  ``ts_inference_latency_microseconds`` and ``ts_queue_latency_microseconds``.
* Histograms in seconds: request latency, queue wait, each worker stage, and batch size.
* ``tsf_inflight_requests{model_name}``: requests a model accepted and has not answered yet,
  the per-replica load figure for autoscaling.
* Custom metrics that handlers record through ``context.metrics``, created on first use.

Every recorded value is also passed to ``tsf_record_metric`` when a plugin implements it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .generation_metrics import GenerationMetrics
from .loop_metrics import LoopCounter, LoopGauge, LoopHistogram

disable_created_metrics()  # ``*_created`` series only add noise to every scrape

log = logging.getLogger("tsf.metrics")

MODEL_LABELS = ("model_name", "model_version")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class TorchServeCounters:
    """A collector emitting TorchServe's three counters with their historical names and labels."""

    # The microsecond sums carry no ``_total`` suffix in TorchServe, so they are exposed as
    # untyped (a counter without the suffix is invalid in Prometheus' format).
    NAMES = {
        "requests": ("ts_inference_requests_total", "counter",
                     "Total number of inference requests."),
        "latency": ("ts_inference_latency_microseconds", "untyped",
                    "Cumulative inference duration in microseconds"),
        "queue": ("ts_queue_latency_microseconds", "untyped",
                  "Cumulative queue duration in microseconds"),
    }

    def __init__(self) -> None:
        self.values: dict[str, dict[tuple[str, str], float]] = {k: {} for k in self.NAMES}
        self.uuid = str(uuid.uuid4())

    def add(self, which: str, model: str, version: str, amount: float) -> None:
        series = self.values[which]
        key = (model, version)
        series[key] = series.get(key, 0.0) + amount

    def collect(self):
        for which, (name, kind, doc) in self.NAMES.items():
            family = name[:-len("_total")] if kind == "counter" else name
            metric = Metric(family, doc, kind)
            for (model, version), value in sorted(self.values[which].items()):
                metric.add_sample(name, {"uuid": self.uuid, "model_name": model,
                                         "model_version": version}, value)
            yield metric


class _NamedCounter:
    """A handler's counter exposed under exactly the name the handler gave, as TorchServe does.

    ``prometheus_client.Counter("InferenceRequestCount")`` would expose
    ``InferenceRequestCount_total``, a name no TorchServe dashboard queries. A name that ends in
    ``_total`` is exposed as a counter; any other as untyped (a counter without the suffix is
    invalid in Prometheus' format), like ``ts_inference_latency_microseconds``.
    """

    def __init__(self, name: str, doc: str, label_names: tuple[str, ...]) -> None:
        self.name, self.doc, self.label_names = name, doc, label_names
        self.values: dict[tuple[str, ...], float] = {}
        self.lock = threading.Lock()

    def labels(self, **labels: Any) -> "_NamedCounter._Child":
        return self._Child(self, tuple(str(labels[n]) for n in self.label_names))

    class _Child:
        def __init__(self, parent: "_NamedCounter", key: tuple[str, ...]) -> None:
            self.parent, self.key = parent, key

        def inc(self, amount: float = 1.0) -> None:
            if amount < 0:
                raise ValueError("counters can only be incremented by non-negative amounts")
            with self.parent.lock:
                self.parent.values[self.key] = self.parent.values.get(self.key, 0.0) + amount

    def _family(self) -> Metric:
        counter = self.name.endswith("_total")
        return Metric(self.name[:-len("_total")] if counter else self.name, self.doc,
                      "counter" if counter else "untyped")

    def describe(self):
        """Lets the registry refuse a name that another metric already uses."""
        return [self._family()]

    def collect(self):
        metric = self._family()
        with self.lock:
            values = sorted(self.values.items())
        for key, value in values:
            metric.add_sample(self.name, dict(zip(self.label_names, key)), value)
        yield metric


class WorkerCollector:
    """Per-worker process figures, read at scrape time: load time, CPU seconds, memory."""

    def __init__(self) -> None:
        self.workers: Callable[[], Iterable[tuple[str, str, Any]]] = lambda: ()

    def collect(self):
        import psutil

        labels = ["model_name", "model_version", "worker_id"]
        load = GaugeMetricFamily("tsf_model_load_seconds",
                                 "Seconds from worker start to model loaded", labels=labels)
        cpu = CounterMetricFamily("tsf_worker_cpu_seconds", "CPU time used by the worker "
                                  "process (user + system)", labels=labels)
        memory = GaugeMetricFamily("tsf_worker_memory_bytes",
                                   "Resident memory of the worker process", labels=labels)
        for model, version, worker in self.workers():
            values = [model, version, worker.id]
            load.add_metric(values, worker.load_seconds)
            try:
                process = psutil.Process(worker.pid)
                times = process.cpu_times()
                rss = process.memory_info().rss
            except (psutil.Error, TypeError, ValueError):
                continue
            cpu.add_metric(values, times.user + times.system)
            memory.add_metric(values, rss)
        yield from (load, cpu, memory)


class ServerMetrics:
    """All metrics of one server; ``record_*`` methods are called on the request path."""

    def __init__(self, observer: Callable[[str, str, float, dict], None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.observer = observer
        self.ts = TorchServeCounters()
        self.registry.register(self.ts)
        r = self.registry
        # recorded per request or per batch: loop metrics (see tsf.telemetry.loop_metrics)
        self.requests = LoopCounter("tsf_requests",
                                    "Requests by kind (predict, explain) and outcome",
                                    MODEL_LABELS + ("kind", "code"), r)
        self.request_seconds = LoopHistogram("tsf_request_duration_seconds",
                                             "Time from request arrival to response",
                                             MODEL_LABELS + ("kind",), r, LATENCY_BUCKETS)
        self.queue_seconds = LoopHistogram("tsf_queue_duration_seconds",
                                           "Time requests wait in the queue before dispatch",
                                           MODEL_LABELS, r, LATENCY_BUCKETS)
        self.stage_seconds = LoopHistogram("tsf_stage_duration_seconds",
                                           "Time per batch in each worker stage",
                                           MODEL_LABELS + ("stage",), r, LATENCY_BUCKETS)
        self.batch_size = LoopHistogram("tsf_batch_size", "Requests per dispatched batch",
                                        MODEL_LABELS, r, BATCH_BUCKETS)
        self.queue_depth = LoopGauge("tsf_queue_depth", "Requests waiting in a model's queue",
                                     MODEL_LABELS, r)
        self.inflight = LoopGauge("tsf_inflight_requests", "Requests a model accepted and has "
                                  "not answered yet (queued or running)", ("model_name",), r)
        self.workers_alive = Gauge("tsf_workers_alive", "Live worker processes per model",
                                   MODEL_LABELS, registry=r)
        self.worker_restarts = Gauge("tsf_worker_restarts", "Worker restarts per model",
                                     MODEL_LABELS, registry=r)
        self.abandoned = Counter("tsf_requests_abandoned",
                                 "Requests whose client went away before the answer: dropped "
                                 "from the queue (stage=queued) or answer discarded "
                                 "(stage=running)", MODEL_LABELS + ("stage",), registry=r)
        self.worker_memory_restarts = Counter(
            "tsf_worker_memory_restarts", "Workers restarted for going over the memory limit",
            MODEL_LABELS, registry=r)
        self.worker_figures = WorkerCollector()
        r.register(self.worker_figures)
        self.generation = GenerationMetrics(r)  # models served by a generation engine
        self._custom: dict[str, tuple[Any, tuple[str, ...]]] = {}

    def _observe(self, name: str, kind: str, value: float, labels: dict) -> None:
        if self.observer is not None:
            self.observer(name, kind, value, labels)

    def record_request(self, model: str, version: str, label_version: str, code: int,
                       total: float, kind: str = "predict") -> None:
        self.requests.labels(model, version, kind, str(code)).inc()
        self.request_seconds.labels(model, version, kind).observe(total)
        self.ts.add("requests", model, label_version, 1)
        self.ts.add("latency", model, label_version, total * 1e6)
        if self.observer is not None:
            labels = {"model_name": model, "model_version": version, "kind": kind}
            self._observe("tsf_request_duration_seconds", "histogram", total, labels)
            self._observe("tsf_requests_total", "counter", 1, dict(labels, code=str(code)))

    def record_queue(self, model: str, version: str, label_version: str, wait: float) -> None:
        self.queue_seconds.labels(model, version).observe(wait)
        self.ts.add("queue", model, label_version, wait * 1e6)
        if self.observer is not None:
            self._observe("tsf_queue_duration_seconds", "histogram", wait,
                          {"model_name": model, "model_version": version})

    def record_batch(self, model: str, version: str, size: int, timings: dict) -> None:
        self.batch_size.labels(model, version).observe(size)
        for stage, seconds in timings.items():
            self.stage_seconds.labels(model, version, stage).observe(seconds)
        if self.observer is not None:
            labels = {"model_name": model, "model_version": version}
            self._observe("tsf_batch_size", "histogram", size, labels)
            for stage, seconds in timings.items():
                self._observe("tsf_stage_duration_seconds", "histogram", seconds,
                              dict(labels, stage=stage))

    def record_custom(self, model: str, version: str, records: list[dict]) -> None:
        """Apply custom metrics sent by a handler (see ``tsf.context.HandlerMetrics``)."""
        for rec in records:
            labels = {"model_name": model, "model_version": version, **rec.get("labels", {})}
            try:
                self._custom_metric(rec["name"], rec["kind"], tuple(sorted(labels)))
                metric, names = self._custom[rec["name"]]
                child = metric.labels(**labels)
                value = float(rec["value"])
                if rec["kind"] == "counter":
                    child.inc(value)
                elif rec["kind"] == "gauge":
                    child.set(value)
                else:
                    child.observe(value)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("custom metric %r from %s dropped: %s", rec.get("name"), model, exc)
                continue
            self._observe(rec["name"], rec["kind"], value, labels)

    def _custom_metric(self, name: str, kind: str, label_names: tuple[str, ...]) -> None:
        existing = self._custom.get(name)
        if existing is not None:
            if existing[1] != label_names:
                raise ValueError(f"labels {label_names} differ from the first use {existing[1]}")
            return
        doc = f"Custom metric {name} recorded by a handler"
        if kind == "counter":
            metric = _NamedCounter(name, doc, label_names)
            self.registry.register(metric)
            self._custom[name] = (metric, label_names)
            return
        cls = {"gauge": Gauge, "histogram": Histogram}.get(kind)
        if cls is None:
            raise ValueError(f"unknown metric kind {kind!r}")
        metric = cls(name, doc, label_names, registry=self.registry)
        self._custom[name] = (metric, label_names)

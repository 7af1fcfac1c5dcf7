"""The server's monitoring, as the adapters and the composition root use it.

:meth:`Monitor.capture` is called by each protocol adapter once it has built a successful
answer; with capture off for the version it returns after one attribute check.  Otherwise it
samples, cuts the bodies at ``max_record_bytes`` (a slice: a 100 MB body is never copied whole)
and appends one record to each sink's queue and the analysis queue.  Everything else happens in
threads: the sinks (:mod:`~tsf.monitoring.sinks`) and the analysis
(:mod:`~tsf.monitoring.analysis`), started when the first model captures.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.capture import CaptureSettings, capture_settings
from ..errors import BadRequest
from .analysis import Analysis
from .baseline import check_rows, warmup_rows
from .feedback import parse_feedback
from .metrics import MonitoringCollector, capture_counters
from .records import CaptureRecord, inference_id_of
from .sinks import SinkContext, SinkRunner, build_sink, sink_classes, sink_key, wait_all
from .store import FILE_NAME

log = logging.getLogger("tsf.capture")
INLINE_BYTES = 8192  # records up to this size (both bodies) get their JSON line on the event loop


@dataclass
class _Route:
    """Where one version's records go, for the settings it was built from."""

    settings: CaptureSettings
    runners: list[SinkRunner]
    records: Any  # its tsf_capture_records_total child
    truncated: Any
    analysed: bool


class Monitor:
    """Capture, feedback, baselines and the monitoring metrics of one server."""

    def __init__(self, config: Any, manager: Any, pm: Any, registry: Any) -> None:
        self.config, self.manager, self.pm = config, manager, pm
        self.registry = manager.registry
        workspace = Path(manager.workspace)
        self.context = SinkContext(
            capture_dir=Path(config.capture_dir) if config.capture_dir else workspace / "capture",
            workspace=workspace)
        self.counters = capture_counters(registry)
        self._classes: dict[str, type] | None = None
        self._runners: dict[str, SinkRunner] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self.analysis: Analysis | None = None
        self._capture_failures = 0
        registry.register(MonitoringCollector(
            lambda: self.analysis.snapshot if self.analysis else {},
            lambda: self.analysis.errors if self.analysis else 0))
        manager.check_capture = self.check

    # --- sinks ---------------------------------------------------------------------------
    def _runner(self, name: str, options: dict) -> SinkRunner:
        key = sink_key(name, options)
        runner = self._runners.get(key)
        if runner is None:
            if self._classes is None:
                self._classes = sink_classes(self.pm)
            sink, flush = build_sink(self._classes, name, options, self.context)
            runner = self._runners[key] = SinkRunner(
                name, sink, flush, self.config.capture_buffer_records,
                self.config.capture_buffer_mb << 20, self.counters.sinks)
        return runner

    def check(self, settings: CaptureSettings) -> None:
        """BadRequest unless every sink the settings name is installed and takes its
        options (the sinks are started: records may follow at once)."""
        for name, options in settings.sinks.items():
            self._runner(name, options)

    # --- capture (event loop) ------------------------------------------------------------
    def _route(self, mv: Any, settings: CaptureSettings) -> _Route:
        route = _Route(settings, [self._runner(n, o) for n, o in settings.sinks.items()],
                       self.counters.records.labels(mv.name),
                       self.counters.truncated.labels(mv.name),
                       settings.feedback or settings.drift is not None)
        if route.analysed:
            self._analysis()
        self._routes[mv.name, mv.version] = route
        return route

    def capture(self, mv: Any, request_id: str, headers: Any, request_ctype: str,
                request_body: bytes, response_ctype: str, response_body: bytes,
                protocol: str = "torchserve") -> None:
        """Capture one answered request of ``mv`` (see the module docstring)."""
        settings = mv.settings.capture
        if settings is None:
            return
        try:
            route = self._routes.get((mv.name, mv.version))
            if route is None or route.settings is not settings:
                route = self._route(mv, settings)
            if settings.sampling_percent < 100.0 and \
                    random.random() * 100.0 >= settings.sampling_percent:
                return
            cap = settings.max_record_bytes
            request = request_body if settings.requests else None
            response = response_body if settings.responses else None
            if request is not None and len(request) > cap:
                request = request[:cap]
                route.truncated.inc()
            if response is not None and len(response) > cap:
                response = response[:cap]
                route.truncated.inc()
            record = CaptureRecord(request_id, mv.name, mv.version, time.time(), request_ctype,
                                   request, len(request_body), response_ctype, response,
                                   len(response_body), inference_id_of(headers), protocol)
            route.records.inc()
            if route.runners and len(request or b"") + len(response or b"") <= INLINE_BYTES:
                # a small record is cheaper to format here, once, than in the sink threads
                # between the requests' work; a large one is formatted there
                record.to_json_line()
            for runner in route.runners:
                runner.offer(record)
            if route.analysed:
                self.analysis.offer(record)
        except Exception:  # capture must never fail an answered request
            self._capture_failures += 1
            if self._capture_failures <= 5:
                log.exception("capturing request %s of model %s failed", request_id, mv.name)

    # --- what the analysis thread asks ---------------------------------------------------
    def settings_of(self, model: str, version: str) -> CaptureSettings | None:
        mv = self.registry.get_exact(model, version)
        return mv.settings.capture if mv is not None else None

    def warmup_rows_of(self, model: str, version: str) -> list[dict]:
        mv = self.registry.get_exact(model, version)
        if mv is None:
            return []
        return warmup_rows(mv.archive.model_config, str(mv.archive.model_dir))

    def _analysis(self) -> Analysis:
        if self.analysis is None:
            self.analysis = Analysis(self.context.workspace / FILE_NAME,
                                     self.config.monitoring_max_predictions,
                                     self.config.capture_buffer_records, self.settings_of,
                                     self.warmup_rows_of, self.counters.sinks.dropped)
        return self.analysis

    # --- management and feedback ---------------------------------------------------------
    def set_capture(self, name: str, version: str | None, value: Any) -> dict:
        """Turn a version's capture on, change it, or off (``false``); the new settings."""
        mv = self.registry.get(name, version)
        settings = capture_settings(value)
        if settings is not None:
            self.check(settings)
        mv.settings.capture = settings
        log.info("capture of model %s version %s: %s", mv.name, mv.version,
                 "off" if settings is None else settings.describe())
        return {"modelName": mv.name, "modelVersion": mv.version,
                "capture": settings.describe() if settings is not None else None}

    async def feedback(self, model: str, document: Any) -> dict:
        """Join ground truth with the model's captured predictions (see
        :mod:`tsf.monitoring.feedback` and :meth:`PredictionStore.label`)."""
        self.registry.get(model)
        items = parse_feedback(document)
        now = time.time()
        analysis = self._analysis()
        count = await asyncio.wrap_future(analysis.submit(
            lambda store: store.label(model, items, now, analysis.predictor(model))))
        self.counters.feedback.labels(model).inc(count)
        return {"accepted": count}

    async def set_baseline(self, name: str, version: str | None, document: Any) -> dict:
        """Set the version's drift baseline from a baseline document (None: reset it)."""
        mv = self.registry.get(name, version)
        rows = check_rows(document) if document is not None else None
        task = self._analysis().set_baseline((mv.name, mv.version), rows, "file",
                                             persist=True)
        windows = await asyncio.wrap_future(self._analysis().submit(task))
        return {"modelName": mv.name, "modelVersion": mv.version, "baseline": windows}

    def describe(self, name: str) -> list[dict]:
        """Each version's capture settings and latest monitoring snapshot."""
        snapshot = self.analysis.snapshot if self.analysis is not None else {}
        out = []
        for mv in self.registry.versions(name):
            settings = mv.settings.capture
            out.append({"modelName": mv.name, "modelVersion": mv.version,
                        "capture": settings.describe() if settings is not None else None,
                        "monitoring": snapshot.get((mv.name, mv.version), {})})
        return out

    def close(self, timeout: float = 10.0) -> bool:
        """Flush every sink and stop the threads (blocking; call it off the event loop)."""
        deadline = time.monotonic() + timeout
        if self.analysis is not None:
            self.analysis.stop(max(0.0, deadline - time.monotonic()) / 2)
        return wait_all(list(self._runners.values()), max(0.0, deadline - time.monotonic()))


def capture_value(query: str | None, body: Any) -> Any:
    """A ``capture`` parameter: the JSON body's ``capture`` key, else the query parameter
    (JSON text, or true/false); ``None`` when neither is given."""
    if isinstance(body, dict) and "capture" in body:
        return body["capture"]
    if query is None or query == "":
        return None
    from ..json_body import load_json

    text = query.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return load_json(text, "parameter capture")
    except BadRequest:
        raise BadRequest("parameter capture must be JSON (an object of capture settings), "
                         "true or false") from None

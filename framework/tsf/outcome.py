"""What one request sent to a model came to, for every protocol: counting it in flight while
a model holds it, closing its span and counting it in the request metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .services import Services


class Outcome:
    """The model version that took a request, the HTTP-equivalent status it ended with, and
    its tracing span (``None`` when tracing is off).

    The protocol sets ``model_version`` once a model accepted the request, and ``code``;
    from then until :meth:`close` the request counts in ``tsf_inflight_requests``.
    :meth:`close` ends the span and records the request, whatever happened.
    """

    __slots__ = ("_model_version", "code", "span", "started", "metrics")

    def __init__(self, span: Any = None, metrics: Any = None) -> None:
        self._model_version: Any = None
        self.code = 500
        self.span = span
        self.metrics = metrics  # ServerMetrics; None leaves the in-flight gauge alone
        self.started = time.perf_counter()

    @property
    def model_version(self) -> Any:
        return self._model_version

    @model_version.setter
    def model_version(self, mv: Any) -> None:
        if self._model_version is None and mv is not None and self.metrics is not None:
            self.metrics.inflight.labels(mv.name).inc()
        self._model_version = mv

    def close(self, services: Services, kind: str, label_version: str) -> None:
        if self.span is not None:
            services.tracing.end_request(self.span, self.code)
        mv = self._model_version
        if mv is not None and self.metrics is not None:
            self.metrics.inflight.labels(mv.name).dec()
        if mv is not None:
            services.manager.metrics.record_request(
                mv.name, mv.version, label_version, self.code,
                time.perf_counter() - self.started, kind)

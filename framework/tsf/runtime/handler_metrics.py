"""Custom metrics a handler records, with TorchServe's metrics API (``context.metrics``).

Records are collected in the worker and sent to the front end with each batch's results, where
they become Prometheus series on ``/metrics`` (``model_name`` and ``model_version`` labels are
added there).  Dimensions become labels.  As in TorchServe, ``metric_type`` is one of
``counter``, ``gauge``, ``histogram`` (a ``ts.metrics.metric_type_enum.MetricTypes`` member or its
string value), and an update that does not fit its metric (wrong number of dimension values, a
negative counter increment) is logged and dropped.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tsf.worker")

KINDS = ("counter", "gauge", "histogram")
TIME_UNITS = ("ms", "s")
SIZE_UNITS = ("MB", "kB", "GB", "B")


def declared_metrics(path: str) -> list[dict]:
    """The ``model_metrics`` section of TorchServe's ``metrics_config`` YAML file, as
    ``[{"name", "unit", "dimensions", "type"}]``; ``[]`` when no file is configured."""
    if not path:
        return []
    import yaml

    from ..errors import InternalError

    try:
        with open(path) as f:
            document = yaml.safe_load(f) or {}
        section = document.get("model_metrics") or {}
        out = []
        for kind, metrics in section.items():
            kind = metric_kind(kind)
            for metric in metrics or []:
                out.append({"name": str(metric["name"]), "unit": str(metric.get("unit", "")),
                            "dimensions": [str(d) for d in metric.get("dimensions") or []],
                            "type": kind})
        return out
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InternalError(f"metrics_config {path!r} is not a TorchServe metrics file "
                            f"({type(exc).__name__}: {exc})") from None


class MetricNotFound(KeyError):
    """``get_metric`` of a name (and type) no one added (TorchServe's MetricsCacheKeyError)."""


def metric_kind(metric_type: Any) -> str:
    """``"counter"``, ``"gauge"`` or ``"histogram"`` from a MetricTypes member or a string."""
    kind = str(getattr(metric_type, "value", metric_type)).lower()
    if kind not in KINDS:
        raise ValueError(f"metric_type must be one of {', '.join(KINDS)}, not {metric_type!r}")
    return kind


def dimension_pairs(dimensions: Any) -> list[tuple[str, str]]:
    """``(name, value)`` pairs from Dimension objects, ``(name, value)`` pairs or a dict."""
    if not dimensions:
        return []
    if isinstance(dimensions, dict):
        return [(str(k), str(v)) for k, v in dimensions.items()]
    pairs = []
    for dim in dimensions:
        name, value = (dim.name, dim.value) if hasattr(dim, "name") else dim
        pairs.append((str(name), str(value)))
    return pairs


class CachedMetric:
    """One metric with fixed dimension names (TorchServe's ``CachingMetric``)."""

    def __init__(self, sink: "HandlerMetrics", name: str, unit: str,
                 dimension_names: list[str], kind: str) -> None:
        self.sink = sink
        self.metric_name = name
        self.unit = unit
        self.dimension_names = list(dimension_names)
        self.kind = kind

    @property
    def metric_type(self) -> str:
        return self.kind

    def add_or_update(self, value: float, dimension_values: list | None = None,
                      request_id: str = "") -> None:
        """Record ``value`` with one value per dimension name, in the same order."""
        values = list(dimension_values or [])
        if len(values) != len(self.dimension_names):
            log.error("metric %s: dimension values %s do not match dimension names %s; dropped",
                      self.metric_name, values, self.dimension_names)
            return
        if self.kind == "counter" and value < 0:
            log.error("metric %s: a counter cannot be incremented by %s; dropped",
                      self.metric_name, value)
            return
        self.sink.record(self.kind, self.metric_name, value,
                         dict(zip(self.dimension_names, map(str, values))))

    def update(self, value: float, request_id: str = "", dimensions: Any = None) -> None:
        """TorchServe's older form: dimensions as Dimension objects in the names' order."""
        self.add_or_update(value, [v for _, v in dimension_pairs(dimensions)], request_id)


class HandlerMetrics:
    """``context.metrics``: TorchServe's metric cache API plus ``add_gauge``/``add_histogram``.

    Names must be valid Prometheus names (others are dropped by the front end with a warning).
    """

    def __init__(self) -> None:
        self._records: list[dict] = []
        self._cache: dict[tuple[str, str], CachedMetric] = {}

    def declare(self, metrics: list[dict]) -> None:
        """Add metrics declared in ``metrics_config`` (see :func:`declared_metrics`)."""
        for metric in metrics:
            self.add_metric_to_cache(metric["name"], metric["unit"], metric["dimensions"],
                                     metric["type"])

    def record(self, kind: str, name: str, value: float, labels: dict[str, str]) -> None:
        self._records.append({"name": name, "kind": kind, "value": float(value),
                              "labels": labels})

    def drain(self) -> list[dict]:
        records, self._records = self._records, []
        return records

    # --- TorchServe's metric cache -----------------------------------------------------------
    def add_metric_to_cache(self, metric_name: str, unit: str,
                            dimension_names: list[str] | None = None,
                            metric_type: Any = "counter") -> CachedMetric:
        """Create (or replace) a metric; update it with ``add_or_update(value, values)``."""
        if not isinstance(metric_name, str) or not isinstance(unit, str):
            raise TypeError("metric_name and unit must be str")
        kind = metric_kind(metric_type)
        metric = CachedMetric(self, metric_name, unit, list(dimension_names or []), kind)
        self._cache[(kind, metric_name)] = metric
        return metric

    def get_metric(self, metric_name: str, metric_type: Any = "counter") -> CachedMetric:
        metric = self._cache.get((metric_kind(metric_type), metric_name))
        if metric is None:
            raise MetricNotFound(f"metric {metric_name!r} of type {metric_kind(metric_type)} "
                                 "was never added")
        return metric

    def _update(self, name: str, value: float, unit: str, dimensions: Any,
                metric_type: Any) -> None:
        pairs = dimension_pairs(dimensions)
        kind = metric_kind(metric_type)
        names = [n for n, _ in pairs]
        metric = self._cache.get((kind, name))
        if metric is None or metric.dimension_names != names:
            metric = self.add_metric_to_cache(name, unit, names, kind)
        metric.add_or_update(value, [v for _, v in pairs])

    def add_metric(self, name: str, value: float, unit: str, idx: Any = None,
                   dimensions: Any = None, metric_type: Any = "counter") -> None:
        self._update(name, value, unit, dimensions, metric_type)

    def add_counter(self, name: str, value: float = 1, idx: Any = None,
                    dimensions: Any = None) -> None:
        self._update(name, value, "count", dimensions, "counter")

    def add_time(self, name: str, value: float, idx: Any = None, unit: str = "ms",
                 dimensions: Any = None, metric_type: Any = "gauge") -> None:
        if unit not in TIME_UNITS:
            raise ValueError(f"the unit of a time metric is one of {TIME_UNITS}, not {unit!r}")
        self._update(name, value, unit, dimensions, metric_type)

    def add_size(self, name: str, value: float, idx: Any = None, unit: str = "MB",
                 dimensions: Any = None, metric_type: Any = "gauge") -> None:
        if unit not in SIZE_UNITS:
            raise ValueError(f"the unit of a size metric is one of {SIZE_UNITS}, not {unit!r}")
        self._update(name, value, unit, dimensions, metric_type)

    def add_percent(self, name: str, value: float, idx: Any = None, dimensions: Any = None,
                    metric_type: Any = "gauge") -> None:
        self._update(name, value, "percent", dimensions, metric_type)

    def add_error(self, name: str, value: float, dimensions: Any = None) -> None:
        self._update(name, value, "", dimensions, "counter")

    # --- tsf's shorthands ---------------------------------------------------------------------
    def add_gauge(self, name: str, value: float, dimensions: Any = None) -> None:
        self._update(name, value, "", dimensions, "gauge")

    def add_histogram(self, name: str, value: float, dimensions: Any = None) -> None:
        self._update(name, value, "", dimensions, "histogram")

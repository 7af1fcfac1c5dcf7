"""Counters, gauges and histograms updated on the event loop, exposed as prometheus_client's.

The request path records a handful of values per request.  ``prometheus_client``'s metrics
validate the label values on every ``labels()`` call and take a lock on every update, which
made recording cost more than a tenth of the front end's CPU time per request.  These keep one
child per set of label values and update plain floats: every update happens on the event loop's
thread, and a scrape (on that thread too) reads them between two updates.

They register in a ``CollectorRegistry`` and produce the same families, samples and label
order as ``prometheus_client``'s ``Counter``, ``Gauge`` and ``Histogram`` (with ``*_created``
series disabled, as :mod:`tsf.telemetry.metrics` disables them), so ``/metrics`` is unchanged.
Label values are strings.
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

INF = float("inf")


class _LoopMetric:
    """A labelled metric: one child per set of label values, made on first use."""

    kind = ""
    suffix = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            child = self._children[values] = self._child()
        return child

    def _child(self) -> Any:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        for values, child in list(self._children.items()):
            labels = dict(zip(self.labelnames, values))
            for suffix, extra, value in child.samples():
                metric.add_sample(self.name + suffix, dict(labels, **extra) if extra else labels,
                                  value)
        return [metric]


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _CounterChild(_Value):
    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount

    def samples(self) -> list[tuple[str, dict, float]]:
        return [("_total", {}, self.value)]


class _GaugeChild(_Value):
    __slots__ = ()

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)

    def samples(self) -> list[tuple[str, dict, float]]:
        return [("", {}, self.value)]


class LoopCounter(_LoopMetric):
    """``prometheus_client.Counter`` with labels: ``labels(...).inc()``; ``name`` without
    ``_total``."""

    kind = "counter"

    def _child(self) -> _CounterChild:
        return _CounterChild()


class LoopGauge(_LoopMetric):
    """``prometheus_client.Gauge`` with labels: ``labels(...).inc()``, ``dec()``, ``set()``."""

    kind = "gauge"

    def _child(self) -> _GaugeChild:
        return _GaugeChild()


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum", "_les")

    def __init__(self, bounds: list[float], les: list[str]) -> None:
        self.bounds = bounds
        self._les = les
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        index = bisect.bisect_left(self.bounds, amount)  # the first bound >= amount
        if amount <= self.bounds[index]:  # NaN falls in no bucket, as in prometheus_client
            self.counts[index] += 1.0

    def samples(self) -> list[tuple[str, dict, float]]:
        out, total = [], 0.0
        for le, count in zip(self._les, self.counts):
            total += count
            out.append(("_bucket", {"le": le}, total))
        out.append(("_count", {}, total))
        out.append(("_sum", {}, self.sum))
        return out


class LoopHistogram(_LoopMetric):
    """``prometheus_client.Histogram`` with labels and non-negative bucket bounds:
    ``labels(...).observe(value)``."""

    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != INF:
            bounds.append(INF)
        self.bounds = bounds
        self.les = [floatToGoString(b) for b in bounds]
        super().__init__(name, documentation, labelnames, registry)

    def _child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds, self.les)

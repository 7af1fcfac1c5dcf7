"""Drift between a baseline and the current window: the population stability index and a test
statistic per feature, in pure Python (no numpy or scipy in the front end).

* numeric features: PSI over ten bins cut at the baseline's deciles, and the two-sample
  Kolmogorov-Smirnov statistic with its asymptotic p-value;
* categorical features (and the predicted class): PSI over the categories, and Pearson's
  chi-square statistic of the 2 x k table, with its p-value by the Wilson-Hilferty
  approximation.

PSI reads as usual: below 0.1 stable, 0.1-0.2 a moderate shift, above 0.2 a significant one.
"""

from __future__ import annotations

import bisect
import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

EPSILON = 1e-4  # the share an empty bin counts as, so PSI stays finite
BINS = 10


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts) or 1
    return [max(c / total, EPSILON) for c in counts]


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of two histograms over the same bins."""
    return sum((a - e) * math.log(a / e) for e, a in zip(_shares(expected), _shares(actual)))


def decile_edges(values: list[float], bins: int = BINS) -> list[float]:
    ordered = sorted(values)
    edges = {ordered[min(len(ordered) - 1, int(len(ordered) * i / bins))] for i in range(1, bins)}
    return sorted(edges)


def histogram(values: Iterable[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[bisect.bisect_right(edges, value)] += 1
    return counts


def ks(a: list[float], b: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (statistic D, asymptotic p-value)."""
    xs, ys = sorted(a), sorted(b)
    n, m = len(xs), len(ys)
    i = j = 0
    d = 0.0
    while i < n and j < m:
        value = min(xs[i], ys[j])
        while i < n and xs[i] == value:
            i += 1
        while j < m and ys[j] == value:
            j += 1
        d = max(d, abs(i / n - j / m))
    root = math.sqrt(n * m / (n + m))
    lam = root * d
    if lam < 1e-3:
        return d, 1.0
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(1.0, max(0.0, p))


def chi_square(a: collections.Counter, b: collections.Counter) -> tuple[float, float]:
    """Pearson's chi-square of the 2 x k table of two category counts: (statistic, p-value)."""
    categories = sorted(set(a) | set(b), key=str)
    na, nb = sum(a.values()), sum(b.values())
    total = na + nb
    statistic = 0.0
    for category in categories:
        column = a[category] + b[category]
        for observed, row in ((a[category], na), (b[category], nb)):
            expected = row * column / total
            if expected > 0:
                statistic += (observed - expected) ** 2 / expected
    dof = len(categories) - 1
    if dof < 1:
        return 0.0, 1.0
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return statistic, 0.5 * math.erfc(z / math.sqrt(2))


def compare(baseline: list[Any], current: list[Any]) -> dict[str, Any]:
    """Drift of one feature: ``{"kind", "psi", "test", "statistic", "p_value"}``."""
    if all(isinstance(v, float) for v in baseline) and all(isinstance(v, float) for v in current):
        edges = decile_edges(baseline)
        score = psi(histogram(baseline, edges), histogram(current, edges))
        statistic, p = ks(baseline, current)
        return {"kind": "numeric", "psi": score, "test": "ks", "statistic": statistic,
                "p_value": p}
    a = collections.Counter(str(v) for v in baseline)
    b = collections.Counter(str(v) for v in current)
    categories = sorted(set(a) | set(b), key=str)
    score = psi([a[c] for c in categories], [b[c] for c in categories])
    statistic, p = chi_square(a, b)
    return {"kind": "categorical", "psi": score, "test": "chi2", "statistic": statistic,
            "p_value": p}


@dataclass
class DriftWindows:
    """A model version's baseline rows and its current window (the last ``window_size``).

    With a capture baseline the first ``baseline_size`` rows become the baseline; rows after
    it fill the current window, a sample of them past ``per_second`` (:meth:`wants`).  A
    baseline given from elsewhere (warm-up inputs, a file) is complete at once; until it is
    given, rows are not kept.
    """

    baseline_size: int
    window_size: int
    min_samples: int
    max_features: int
    source: str = "capture"
    per_second: float = math.inf  # rows the current window takes at most, on average
    baseline: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    current: collections.deque = field(default_factory=collections.deque)
    _tokens: float = 0.0
    _refilled: float = 0.0

    def __post_init__(self) -> None:
        self.current = collections.deque(maxlen=self.window_size)
        self._tokens = float(self.window_size)

    def wants(self, now: float) -> bool:
        """Whether to read a row now: always while a capture baseline fills, then at most
        ``per_second`` rows a second (a token bucket as deep as the window), so reading
        features costs the same at any request rate."""
        if not self.complete:
            return self.source == "capture"
        self._tokens = min(float(self.window_size),
                           self._tokens + (now - self._refilled) * self.per_second)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def set_baseline(self, rows: list[dict[str, Any]], source: str) -> None:
        self.baseline, self.source, self.complete = list(rows), source, True
        self.current.clear()

    def reset(self, source: str = "capture") -> None:
        """No baseline: a capture baseline is collected from the next rows, any other waits
        until it is given."""
        self.baseline, self.source, self.complete = [], source, False
        self.current.clear()

    def add(self, row: dict[str, Any]) -> None:
        if not row:
            return
        if self.complete:
            self.current.append(row)
            return
        if self.source != "capture":
            return  # waiting for a baseline from elsewhere
        self.baseline.append(row)
        if len(self.baseline) >= self.baseline_size:
            self.complete = True

    def features(self) -> list[str]:
        """The features the baseline has most often (at most ``max_features``; the
        prediction first)."""
        counts = collections.Counter(k for row in self.baseline for k in row)
        ordered = sorted(counts, key=lambda k: (k not in ("prediction", "score"), -counts[k], k))
        return ordered[:self.max_features]

    def compute(self) -> dict[str, dict[str, Any]]:
        """``{feature: drift}`` once both windows hold ``min_samples`` rows with it."""
        if not self.complete or len(self.current) < self.min_samples:
            return {}
        current = list(self.current)
        out = {}
        for name in self.features():
            base = [_value(row[name]) for row in self.baseline if name in row]
            now = [_value(row[name]) for row in current if name in row]
            if len(base) >= self.min_samples and len(now) >= self.min_samples:
                out[name] = dict(compare(base, now), baseline_n=len(base), current_n=len(now))
            time.sleep(0.0001)  # the event loop may run between features
        return out

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "complete": self.complete,
                "baseline_rows": len(self.baseline), "current_rows": len(self.current)}


def _value(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return str(value)

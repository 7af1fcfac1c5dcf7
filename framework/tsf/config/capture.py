"""A model's ``capture:`` settings (model-config.yaml, or the ``capture`` parameter of register
and ``PUT /models/{m}``), checked: a malformed value is a 400 that names its key.

::

    capture:
      sampling_percent: 100        # share of answered requests captured (0-100)
      mode: both                   # request | response | both
      max_record_bytes: 1048576    # per body; a longer body is cut and its full size recorded
      sinks: [jsonl]               # or {jsonl: {}, s3: {url: s3://bucket/prefix}, ...}
      feedback: true               # keep predictions for POST /feedback (the quality metrics)
      groups: [region]             # feedback group keys that get fairness metrics
      positive_class: "1"          # the class fairness rates count as "selected"
      prediction_key: label        # where the predicted class lies in a JSON answer
      window_seconds: 3600         # quality and fairness over the labels of this window
      interval_seconds: 30         # how often quality and drift are computed
      max_classes: 10              # per-class series for the most frequent classes only
      max_group_values: 10         # per-group series for the most frequent values only
      drift:                       # or false
        baseline: capture          # capture | warmup | a baseline file set with tsf monitor
        baseline_size: 500         # records the capture baseline takes
        window_size: 500           # the current window: the last N records
        min_samples: 100           # no drift figure from fewer records
        max_features: 20

The sinks' own options are checked by the sinks (:mod:`tsf.monitoring.sinks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import BadRequest

MODES = ("request", "response", "both")
BASELINES = ("capture", "warmup", "file")
MAX_GROUPS = 8


@dataclass(frozen=True)
class DriftSettings:
    """Where the baseline comes from and how large the windows are."""

    baseline: str = "capture"
    baseline_size: int = 500
    window_size: int = 500
    min_samples: int = 100
    max_features: int = 20


@dataclass(frozen=True)
class CaptureSettings:
    """What one model version captures, where it goes, and what is computed from it."""

    sampling_percent: float = 100.0
    mode: str = "both"
    max_record_bytes: int = 1 << 20
    sinks: dict[str, dict] = field(default_factory=lambda: {"jsonl": {}})
    feedback: bool = True
    groups: tuple[str, ...] = ()
    positive_class: str = "1"
    prediction_key: str = ""
    window_seconds: float = 3600.0
    interval_seconds: float = 30.0
    max_classes: int = 10
    max_group_values: int = 10
    drift: DriftSettings | None = field(default_factory=DriftSettings)

    @property
    def requests(self) -> bool:
        return self.mode != "response"

    @property
    def responses(self) -> bool:
        return self.mode != "request"

    def describe(self) -> dict[str, Any]:
        """The settings as the management API shows them."""
        out: dict[str, Any] = {
            "sampling_percent": self.sampling_percent, "mode": self.mode,
            "max_record_bytes": self.max_record_bytes, "sinks": self.sinks,
            "feedback": self.feedback, "groups": list(self.groups),
            "positive_class": self.positive_class, "prediction_key": self.prediction_key,
            "window_seconds": self.window_seconds, "interval_seconds": self.interval_seconds,
            "max_classes": self.max_classes, "max_group_values": self.max_group_values,
            "drift": None}
        if self.drift is not None:
            out["drift"] = {k: getattr(self.drift, k) for k in DriftSettings.__dataclass_fields__}
        return out


def label_text(value: Any) -> str:
    """A class label as text, the same whichever JSON type carried it (1, 1.0, "1")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Reader:
    """Reads one mapping's keys, each error naming ``prefix.key``."""

    def __init__(self, values: Mapping[str, Any], prefix: str, known: set[str]) -> None:
        self.values, self.prefix = values, prefix
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            raise BadRequest(f"{prefix}.{unknown[0]} is not a capture setting (known: "
                             f"{', '.join(sorted(known))})")

    def fail(self, key: str, wanted: str, value: Any) -> BadRequest:
        return BadRequest(f"{self.prefix}.{key} must be {wanted}, got {value!r:.60}")

    def number(self, key: str, default: float, low: float, high: float = math.inf) -> float:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or not low <= value <= high:
            bounds = f"from {low:g} to {high:g}" if high != math.inf else f">= {low:g}"
            raise self.fail(key, f"a number {bounds}", value)
        return float(value)

    def count(self, key: str, default: int, low: int, high: int = 1 << 40) -> int:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"an integer from {low} to {high}", value)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.values.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def text(self, key: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.values.get(key, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and choices is None:
            value = label_text(value)
        if not isinstance(value, str) or len(value) > 256 or \
                (choices is not None and value not in choices):
            wanted = f"one of {', '.join(choices)}" if choices else "a string"
            raise self.fail(key, wanted, value)
        return value


def _sinks(value: Any, prefix: str) -> dict[str, dict]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) and v for v in value):
            raise BadRequest(f"{prefix}.sinks must name at least one sink, got {value!r:.60}")
        return {name: {} for name in value}
    if isinstance(value, dict) and value:
        out = {}
        for name, options in value.items():
            if options is None:
                options = {}
            if not isinstance(name, str) or not isinstance(options, dict):
                raise BadRequest(f"{prefix}.sinks.{name} must be a mapping of the sink's "
                                 f"options, got {options!r:.60}")
            out[name] = dict(options)
        return out
    raise BadRequest(f"{prefix}.sinks must be a list of sink names or a mapping of names to "
                     f"options, got {value!r:.60}")


def _drift(value: Any, prefix: str) -> DriftSettings | None:
    if value is False or value is None:
        return None
    if value is True:
        return DriftSettings()
    if not isinstance(value, dict):
        raise BadRequest(f"{prefix}.drift must be a mapping or false, got {value!r:.60}")
    read = _Reader(value, prefix + ".drift", set(DriftSettings.__dataclass_fields__))
    baseline = read.text("baseline", "capture")
    if baseline not in BASELINES:
        raise read.fail("baseline", "capture, warmup or file (a baseline set with "
                        "tsf monitor baseline)", baseline)
    window = read.count("window_size", 500, 10, 100_000)
    return DriftSettings(baseline=baseline,
                         baseline_size=read.count("baseline_size", 500, 10, 100_000),
                         window_size=window,
                         min_samples=read.count("min_samples", min(100, window), 5, window),
                         max_features=read.count("max_features", 20, 1, 200))


def capture_settings(value: Any, prefix: str = "capture") -> CaptureSettings | None:
    """The checked settings (``None``: capture off) of a ``capture`` value: a mapping,
    ``true`` (every default), or ``false``/``null`` (off).  BadRequest names a bad key."""
    if value is None or value is False:
        return None
    if value is True:
        return CaptureSettings()
    if not isinstance(value, dict):
        raise BadRequest(f"{prefix} must be a mapping of capture settings, true or false, got "
                         f"{value!r:.60}")
    known = set(CaptureSettings.__dataclass_fields__) | {"enabled"}
    read = _Reader(value, prefix, known)
    if not read.flag("enabled", True):
        return None
    groups = value.get("groups", [])
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS or \
            not all(isinstance(g, str) and 0 < len(g) <= 64 for g in groups):
        raise read.fail("groups", f"a list of at most {MAX_GROUPS} group names", groups)
    return CaptureSettings(
        sampling_percent=read.number("sampling_percent", 100.0, 0.0, 100.0),
        mode=read.text("mode", "both", MODES),
        max_record_bytes=read.count("max_record_bytes", 1 << 20, 0, 1 << 30),
        sinks=_sinks(value.get("sinks", ["jsonl"]), prefix),
        feedback=read.flag("feedback", True),
        groups=tuple(groups),
        positive_class=read.text("positive_class", "1"),
        prediction_key=read.text("prediction_key", ""),
        window_seconds=read.number("window_seconds", 3600.0, 1.0),
        interval_seconds=read.number("interval_seconds", 30.0, 0.1, 86400.0),
        max_classes=read.count("max_classes", 10, 1, 100),
        max_group_values=read.count("max_group_values", 10, 1, 100),
        drift=_drift(value.get("drift", True), prefix))

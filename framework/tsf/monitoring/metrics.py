"""Monitoring in Prometheus: the capture counters, and a collector that exports the analysis
thread's latest snapshot of quality, fairness and drift.

Label sets are bounded by the capture settings: classes by ``max_classes``, group keys by the
declared ``groups`` and their values by ``max_group_values`` (the rest as ``other``), features
by ``drift.max_features``.  A series disappears when its model version goes or stops capturing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .sinks import SinkCounters

MV = ["model_name", "model_version"]
CLASS_FIGURES = ("precision", "recall", "false_positive_rate", "support")
GROUP_FIGURES = {"count": "samples", "positives": "positives", "negatives": "negatives",
                 "selection_rate": "selection_rate",
                 "false_positive_rate": "false_positive_rate",
                 "false_negative_rate": "false_negative_rate"}
DIFFERENCES = ("demographic_parity_difference", "equalized_odds_difference")


@dataclass
class CaptureCounters:
    """The counters the event loop and the sink threads increment."""

    records: Counter
    truncated: Counter
    feedback: Counter
    sinks: SinkCounters


def capture_counters(registry: CollectorRegistry) -> CaptureCounters:
    sinks = SinkCounters(
        written=Counter("tsf_capture_sink_written_records", "Captured records a sink wrote",
                        ["sink"], registry=registry),
        errors=Counter("tsf_capture_sink_errors", "Failed writes of captured records to a "
                       "sink (each retried with backoff)", ["sink"], registry=registry),
        dropped=Counter("tsf_capture_dropped_records", "Captured records dropped: buffer "
                        "full, sink failing past the buffer, or unwritten at shutdown",
                        ["sink", "reason"], registry=registry))
    return CaptureCounters(
        records=Counter("tsf_capture_records", "Requests captured (after sampling)",
                        ["model_name"], registry=registry),
        truncated=Counter("tsf_capture_truncated_bodies", "Captured bodies cut at "
                          "max_record_bytes", ["model_name"], registry=registry),
        feedback=Counter("tsf_feedback_labels", "Ground-truth labels accepted by POST "
                         "/feedback", ["model_name"], registry=registry),
        sinks=sinks)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class MonitoringCollector:
    """Exports ``snapshot()``: ``{(model, version): {"quality", "drift", "windows"}}``."""

    def __init__(self, snapshot: Callable[[], dict], errors: Callable[[], int]) -> None:
        self.snapshot, self.errors = snapshot, errors

    def describe(self) -> list:
        return []  # collected on every scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        families = {
            "samples": _gauge("tsf_model_feedback_samples", "Labelled predictions in the "
                              "quality window", MV),
            "accuracy": _gauge("tsf_model_accuracy", "Share of labelled predictions that "
                               "were right", MV)}
        for figure in CLASS_FIGURES:
            families[f"class_{figure}"] = _gauge(
                f"tsf_model_class_{figure}", f"Per-class {figure.replace('_', ' ')} of the "
                "labelled predictions", MV + ["class"])
        for figure, name in GROUP_FIGURES.items():
            families[f"group_{figure}"] = _gauge(
                f"tsf_model_group_{name}", f"Per-group {name.replace('_', ' ')} (fairness)",
                MV + ["group", "value"])
        for name in DIFFERENCES:
            families[name] = _gauge(f"tsf_model_{name}", f"{name.replace('_', ' ')} across a "
                                    "group's values (fairlearn)", MV + ["group"])
        families.update(
            psi=_gauge("tsf_drift_psi", "Population stability index of a feature, current "
                       "window against the baseline", MV + ["feature"]),
            statistic=_gauge("tsf_drift_statistic", "Drift test statistic of a feature (ks: "
                             "Kolmogorov-Smirnov D, chi2: chi-square)", MV + ["feature", "test"]),
            p_value=_gauge("tsf_drift_p_value", "p-value of the drift test of a feature",
                           MV + ["feature", "test"]),
            rows=_gauge("tsf_drift_window_rows", "Rows in a drift window (baseline, current)",
                        MV + ["window"]))
        for (model, version), snap in self.snapshot().items():
            self._quality(families, [model, version], snap.get("quality"))
            self._drift(families, [model, version], snap)
        yield from families.values()
        errors = CounterMetricFamily("tsf_monitoring_errors", "Failed analysis rounds "
                                     "(see the server log)")
        errors.add_metric([], self.errors())
        yield errors

    @staticmethod
    def _quality(families: dict, mv: list[str], quality: dict | None) -> None:
        if not quality:
            return
        families["samples"].add_metric(mv, quality.get("samples", 0))
        if quality.get("accuracy") is not None:
            families["accuracy"].add_metric(mv, quality["accuracy"])
        for cls, figures in quality.get("classes", {}).items():
            for figure in CLASS_FIGURES:
                if figures.get(figure) is not None:
                    families[f"class_{figure}"].add_metric(mv + [cls], figures[figure])
        for group, entry in quality.get("groups", {}).items():
            for value, figures in entry["values"].items():
                for figure in GROUP_FIGURES:
                    if figure in figures:
                        families[f"group_{figure}"].add_metric(mv + [group, value],
                                                               figures[figure])
            for name in DIFFERENCES:
                if name in entry:
                    families[name].add_metric(mv + [group], entry[name])

    @staticmethod
    def _drift(families: dict, mv: list[str], snap: dict) -> None:
        windows = snap.get("windows")
        if windows:
            families["rows"].add_metric(mv + ["baseline"], windows["baseline_rows"])
            families["rows"].add_metric(mv + ["current"], windows["current_rows"])
        for feature, drift in (snap.get("drift") or {}).items():
            families["psi"].add_metric(mv + [feature], drift["psi"])
            families["statistic"].add_metric(mv + [feature, drift["test"]], drift["statistic"])
            families["p_value"].add_metric(mv + [feature, drift["test"]], drift["p_value"])

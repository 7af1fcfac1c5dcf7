"""Quality and fairness of a model version over the labels of a window.

Quality: accuracy, and per class (the ``max_classes`` most frequent true classes) precision,
recall and false-positive rate, with the class's support.

Fairness, for each declared group key: the rows whose feedback named a value of that key, split
by value (the ``max_group_values`` most frequent; the rest together as ``other``), with the
model's choice of ``positive_class`` counted as selected.  Per value: the rows, positives and
negatives (true labels), selection rate, false-positive rate (left out for a value with no
negatives, where it is undefined; fairlearn would report 0) and false-negative rate (left out
with no positives).  Across values: the demographic-parity and equalized-odds differences,
computed with fairlearn (by the server in a helper process,
:mod:`tsf.monitoring.fairlearn_process`).
"""

from __future__ import annotations

import collections
from typing import Any, Callable

OTHER = "other"
Differences = Callable[[list[int], list[int], list[str]], "dict[str, float] | None"]


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def class_quality(pairs: list[tuple[str, str]], max_classes: int) -> dict[str, Any]:
    """``{"samples", "accuracy", "classes": {class: {support, precision, recall, fpr}}}`` of
    ``(prediction, label)`` pairs."""
    total = len(pairs)
    correct = sum(1 for p, t in pairs if p == t)
    support = collections.Counter(t for _, t in pairs)
    predicted = collections.Counter(p for p, _ in pairs)
    hits = collections.Counter(t for p, t in pairs if p == t)
    classes = {}
    for cls, count in sorted(support.items(), key=lambda kv: (-kv[1], kv[0]))[:max_classes]:
        false_positive = predicted[cls] - hits[cls]
        classes[cls] = {"support": count, "precision": _rate(hits[cls], predicted[cls]),
                        "recall": _rate(hits[cls], count),
                        "false_positive_rate": _rate(false_positive, total - count)}
    return {"samples": total, "accuracy": _rate(correct, total), "classes": classes}


def fold(values: list[str], keep: int) -> list[str]:
    """The values with all but the ``keep`` most frequent replaced by ``other``."""
    top = {v for v, _ in collections.Counter(values).most_common(keep)}
    return [v if v in top else OTHER for v in values]


def group_rates(y_true: list[int], y_pred: list[int], groups: list[str]) -> dict[str, dict]:
    """Per group value: rows, positives, negatives, selection and error rates (see the module
    docstring for the ones left out)."""
    out: dict[str, dict] = {}
    for value in sorted(set(groups)):
        rows = [(t, p) for t, p, g in zip(y_true, y_pred, groups) if g == value]
        positives = sum(t for t, _ in rows)
        negatives = len(rows) - positives
        entry: dict[str, Any] = {
            "count": len(rows), "positives": positives, "negatives": negatives,
            "selection_rate": sum(p for _, p in rows) / len(rows)}
        false_positive = sum(1 for t, p in rows if p and not t)
        false_negative = sum(1 for t, p in rows if t and not p)
        if negatives:
            entry["false_positive_rate"] = false_positive / negatives
        if positives:
            entry["false_negative_rate"] = false_negative / positives
        out[value] = entry
    return out


def fairness_differences(y_true: list[int], y_pred: list[int], groups: list[str]
                         ) -> dict[str, float] | None:
    """fairlearn's demographic-parity and equalized-odds differences, computed in this process
    (None without fairlearn).  The server computes them in a helper process instead
    (:mod:`tsf.monitoring.fairlearn_process`)."""
    from .fairlearn_process import compute

    try:
        return compute({"y_true": y_true, "y_pred": y_pred, "groups": groups})
    except ImportError:
        return None


def fairness(rows: list[tuple[str, str, dict]], keys: tuple[str, ...], positive: str,
             max_values: int, differences: Differences = fairness_differences
             ) -> dict[str, Any]:
    """``{key: {"values": {value: rates}, differences...}}`` of ``(prediction, label,
    groups)`` rows; ``differences`` computes fairlearn's two differences."""
    out: dict[str, Any] = {}
    for key in keys:
        chosen = [(p, t, str(g[key])) for p, t, g in rows if g.get(key) is not None]
        if not chosen:
            continue
        y_pred = [int(p == positive) for p, _, _ in chosen]
        y_true = [int(t == positive) for _, t, _ in chosen]
        groups = fold([g for _, _, g in chosen], max_values)
        entry: dict[str, Any] = {"values": group_rates(y_true, y_pred, groups)}
        computed = differences(y_true, y_pred, groups)
        if computed is not None:
            entry.update(computed)
        out[key] = entry
    return out


def evaluate(rows: list[tuple[str, str, str, dict]], settings: Any,
             differences: Differences = fairness_differences) -> dict[str, Any]:
    """Quality and fairness per version of ``(version, prediction, label, groups)`` rows."""
    by_version: dict[str, list[tuple[str, str, dict]]] = collections.defaultdict(list)
    for version, prediction, label, groups in rows:
        by_version[version].append((prediction, label, groups))
    out = {}
    for version, chosen in by_version.items():
        quality = class_quality([(p, t) for p, t, _ in chosen], settings.max_classes)
        if settings.groups:
            quality["groups"] = fairness(chosen, settings.groups, settings.positive_class,
                                         settings.max_group_values, differences)
        out[version] = quality
    return out

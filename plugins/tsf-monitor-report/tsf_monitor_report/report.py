"""``tsf monitor report``'s page, built with Evidently: one self-contained HTML file (its
scripts and fonts inlined, so it opens offline).

Sections:

* a summary line naming the drifted features;
* data drift of every input feature and of the predicted class (Evidently's
  ``DataDriftPreset``, current rows against the reference rows, with its per-feature tests);
* classification quality of the current rows that have a label (``ClassificationPreset``);
* per declared group: rows, positives, negatives, selection rate, false-positive and
  false-negative rates per value, and fairlearn's demographic-parity and equalized-odds
  differences (the figures tsf exports to Prometheus, computed the same way).

pandas and Evidently are imported only when a report is built (never by the server).
"""

from __future__ import annotations

from typing import Any

from tsf import hookimpl

DRIFT_TEST = ":ValueDrift"


def _numeric(rows: list[dict], name: str) -> bool:
    values = [r[name] for r in rows if r.get(name) is not None]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in values)


def _frame(rows: list[dict], columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def drift_section(reference: list[dict], current: list[dict], features: list[str]
                  ) -> tuple[list, list[str], tuple[int, int]]:
    """Evidently's drift widgets and tests, the names of the drifted features, and how many
    reference and current rows were compared."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [f for f in features if any(f in r for r in reference)
               and any(f in r for r in current)]
    inputs = [c for c in columns if c not in ("prediction", "score")]
    if inputs:  # the server reads input features from a sample of requests: compare those
        reference = [r for r in reference if any(c in r for c in inputs)]
        current = [r for r in current if any(c in r for c in inputs)]
    numeric = [c for c in columns if _numeric(reference + current, c)]
    definition = DataDefinition(numerical_columns=numeric,
                                categorical_columns=[c for c in columns if c not in numeric])
    snapshot = Report([DataDriftPreset(columns=columns)], include_tests=True).run(
        current_data=Dataset.from_pandas(_frame(current, columns), data_definition=definition),
        reference_data=Dataset.from_pandas(_frame(reference, columns),
                                           data_definition=definition))
    drifted = sorted(t["metric_config"]["params"]["column"] for t in snapshot.dict()["tests"]
                     if t["metric_config"]["params"].get("type", "").endswith(DRIFT_TEST)
                     and t["status"] == "FAIL")
    return snapshot._widgets + snapshot._tests_widgets, drifted, (len(reference), len(current))


def quality_section(labelled: list[dict], positive: str) -> list:
    """Evidently's classification widgets: binary when the classes are the positive one and
    one other, multiclass otherwise."""
    from evidently import (BinaryClassification, DataDefinition, Dataset,
                           MulticlassClassification, Report)
    from evidently.legacy.renderers.html_widgets import text_widget
    from evidently.presets import ClassificationPreset

    frame = _frame(labelled, ["label", "prediction"]).astype(str)
    classes = set(frame["label"]) | set(frame["prediction"])
    if len(classes) < 2:
        return [text_widget(text=f"Every labelled row is class {classes.pop()}: no "
                            "classification figures.")]
    if len(classes) == 2 and positive in classes:
        task: Any = BinaryClassification(target="label", prediction_labels="prediction",
                                         pos_label=positive)
    else:
        task = MulticlassClassification(target="label", prediction_labels="prediction")
    definition = DataDefinition(categorical_columns=["label", "prediction"],
                                classification=[task])
    snapshot = Report([ClassificationPreset()]).run(
        current_data=Dataset.from_pandas(frame, data_definition=definition))
    return snapshot._widgets


def group_section(labelled: list[dict], groups: list[str], positive: str) -> list:
    from evidently.legacy.renderers.html_widgets import table_data

    from tsf.monitoring.quality import fairness

    rows = [(str(r["prediction"]), str(r["label"]),
             {k: r[f"group.{k}"] for k in groups if r.get(f"group.{k}") is not None})
            for r in labelled]
    widgets = []
    for key, entry in fairness(rows, tuple(groups), positive, 20).items():
        data = [[value, v["count"], v["positives"], v["negatives"],
                 f"{v['selection_rate']:.3f}", _rate(v, "false_positive_rate"),
                 _rate(v, "false_negative_rate")] for value, v in entry["values"].items()]
        title = f"Group {key} (positive class {positive})"
        if "demographic_parity_difference" in entry:
            title += (f": demographic parity difference "
                      f"{entry['demographic_parity_difference']:.3f}, equalized odds "
                      f"difference {entry['equalized_odds_difference']:.3f}")
        widgets.append(table_data(
            title=title, data=data,
            column_names=["value", "rows", "positives", "negatives", "selection rate",
                          "false-positive rate", "false-negative rate"]))
    return widgets


def _rate(entry: dict, key: str) -> str:
    return f"{entry[key]:.3f}" if key in entry else "n/a"


@hookimpl
def tsf_monitor_report(model: str, reference: list[dict], current: list[dict],
                       features: list[str], groups: list[str], output: str, title: str,
                       positive_class: str = "1") -> str:
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget, header_text

    drift_widgets, drifted, compared = drift_section(reference, current, features)
    summary = (f"{title}. Drifted features: {', '.join(drifted)}" if drifted
               else f"{title}. No feature drifted")
    widgets = [header_text(label=summary),
               group_widget(title=f"Data drift of {model}: {compared[1]} current rows "
                            f"against {compared[0]} reference rows", widgets=drift_widgets)]
    labelled = [r for r in current if r.get("label") is not None
                and r.get("prediction") is not None]
    if labelled:
        widgets.append(group_widget(title=f"Classification quality: {len(labelled)} labelled "
                                    "rows", widgets=quality_section(labelled,
                                                                    positive_class)))
        if groups:
            widgets.append(group_widget(title="Per-group metrics",
                                        widgets=group_section(labelled, groups,
                                                              positive_class)))
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(render_widgets(widgets))
    return output

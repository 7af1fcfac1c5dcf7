"""Drift statistics and quality/fairness figures, checked against scipy and fairlearn."""

from __future__ import annotations

import collections
import random

import pytest

from tsf.config.capture import capture_settings
from tsf.monitoring.drift import DriftWindows, chi_square, compare, ks, psi
from tsf.monitoring.quality import class_quality, evaluate, fold, group_rates


def sample(n: int, shift: float = 0.0, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(shift, 1.0) for _ in range(n)]


def test_ks_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for a, b in ((sample(300), sample(200, 0.3, 1)), (sample(50), sample(80, 2.0, 2)),
                 ([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 5.0, 5.0])):
        d, p = ks(a, b)
        expected = stats.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(expected.statistic, abs=1e-12)
        if min(len(a), len(b)) >= 50:  # the asymptotic p-value is for samples this large
            assert p == pytest.approx(expected.pvalue, abs=0.02)


def test_chi_square_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    a = collections.Counter({"x": 50, "y": 30, "z": 20})
    b = collections.Counter({"x": 20, "y": 35, "z": 45, "w": 3})
    statistic, p = chi_square(a, b)
    cats = ["w", "x", "y", "z"]
    expected = stats.chi2_contingency([[a[c] for c in cats], [b[c] for c in cats]],
                                      correction=False)
    assert statistic == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue, abs=1e-3)
    assert chi_square(collections.Counter(a=3), collections.Counter(a=5)) == (0.0, 1.0)


def test_psi_is_small_when_unshifted_and_large_when_shifted():
    base = sample(2000)
    same = compare(base, sample(2000, 0.0, 7))
    moved = compare(base, sample(2000, 1.0, 7))
    assert same["kind"] == "numeric" and same["test"] == "ks"
    assert same["psi"] < 0.05 and same["p_value"] > 0.01
    assert moved["psi"] > 0.5 and moved["p_value"] < 1e-6
    cats = compare(["a"] * 80 + ["b"] * 20, ["a"] * 20 + ["b"] * 80)
    assert cats["kind"] == "categorical" and cats["psi"] > 1 and cats["p_value"] < 1e-6
    assert psi([10, 10], [10, 10]) == 0.0


def test_windows_take_a_capture_baseline_then_slide():
    windows = DriftWindows(baseline_size=100, window_size=50, min_samples=40, max_features=2)
    for i in range(100):
        windows.add({"x": float(i % 10), "y": "a", "prediction": str(i % 2), "z": 1.0})
    assert windows.complete and windows.compute() == {}  # no current rows yet
    for i in range(120):
        windows.add({"x": float(i % 10) + 20, "prediction": str(i % 2)})
    drift = windows.compute()
    assert len(windows.current) == 50
    assert set(drift) == {"prediction", "x"}  # max_features, the prediction first
    assert drift["x"]["psi"] > 1 and drift["prediction"]["psi"] < 0.01
    windows.reset("file")
    windows.add({"x": 1.0})
    assert not windows.complete and windows.baseline == []  # waits for a file
    windows.set_baseline([{"x": 1.0}] * 40, "file")
    assert windows.describe() == {"source": "file", "complete": True, "baseline_rows": 40,
                                  "current_rows": 0}


def test_class_quality():
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("c", "a")]
    quality = class_quality(pairs, max_classes=2)
    assert quality["samples"] == 5 and quality["accuracy"] == 0.6
    assert set(quality["classes"]) == {"a", "b"}  # the two most frequent true classes
    a = quality["classes"]["a"]
    assert a == {"support": 2, "precision": 0.5, "recall": 0.5, "false_positive_rate": 1 / 3}


def test_group_rates_match_fairlearn_and_leave_undefined_rates_out():
    metrics = pytest.importorskip("fairlearn.metrics")
    rng = random.Random(3)
    groups = [rng.choice("abc") for _ in range(400)]
    y_true = [rng.randint(0, 1) for _ in range(400)]
    y_pred = [int(rng.random() < (0.7 if g == "b" else 0.3)) for g in groups]
    rates = group_rates(y_true, y_pred, groups)
    frame = metrics.MetricFrame(
        metrics={"selection_rate": metrics.selection_rate,
                 "false_positive_rate": metrics.false_positive_rate,
                 "false_negative_rate": metrics.false_negative_rate},
        y_true=y_true, y_pred=y_pred, sensitive_features=groups).by_group
    for value in "abc":
        for name in ("selection_rate", "false_positive_rate", "false_negative_rate"):
            assert rates[value][name] == pytest.approx(frame.loc[value, name])
    only_positive = group_rates([1, 1, 0], [1, 0, 0], ["x", "x", "y"])
    assert "false_positive_rate" not in only_positive["x"]  # no negatives: undefined
    assert only_positive["x"]["negatives"] == 0 and only_positive["x"]["false_negative_rate"] \
        == 0.5


def test_a_biased_model_shows_in_the_fairness_figures():
    pytest.importorskip("fairlearn")
    settings = capture_settings({"groups": ["region"], "max_group_values": 2})
    rows = []
    for i in range(200):
        region = "abcd"[i % 4]
        truth = i % 3 == 0
        predicted = truth or region == "b"  # positives for every b
        rows.append(("1.0", str(int(predicted)), str(int(truth)), {"region": region}))
    quality = evaluate(rows, settings)["1.0"]
    region = quality["groups"]["region"]
    assert set(region["values"]) == {"a", "b", "other"}  # the rest folded
    assert region["values"]["b"]["false_positive_rate"] == 1.0
    assert region["values"]["a"]["false_positive_rate"] == 0.0
    assert region["equalized_odds_difference"] == pytest.approx(1.0)
    assert region["demographic_parity_difference"] > 0.5
    assert fold(["x", "y", "y", "z"], 1) == ["other", "y", "y", "other"]


def test_the_fairlearn_helper_process_answers_and_is_restarted():
    pytest.importorskip("fairlearn")
    from tsf.monitoring.fairlearn_process import FairlearnProcess

    helper = FairlearnProcess()
    try:
        args = ([1, 0, 1, 0], [1, 1, 1, 0], ["a", "a", "b", "b"])
        assert helper.differences(*args) == {"demographic_parity_difference": 0.5,
                                             "equalized_odds_difference": 1.0}
        first = helper._proc.pid
        helper._proc.kill()
        helper._proc.wait()
        assert helper.differences(*args)["equalized_odds_difference"] == 1.0  # a new one
        assert helper._proc.pid != first
    finally:
        helper.close()
    assert helper._proc is None

"""Shadow rules and the agreement figure."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tsf.errors import BadRequest
from tsf.serving.shadow import ShadowMetrics, ShadowRule, parse_rule


def test_a_rule_defaults_to_every_request():
    assert parse_rule({"version": "2.0"}, ["1.0", "2.0"]) == ShadowRule("2.0", 100.0)
    assert parse_rule({"version": "2.0", "percent": 0.5}, ["2.0"]).percent == 0.5


@pytest.mark.parametrize("document", [None, {"version": 2.0}, {"version": "3.0"},
                                      {"version": "2.0", "percent": -1},
                                      {"version": "2.0", "percent": float("inf")},
                                      {"version": "2.0", "percent": False}])
def test_bad_rules_are_refused(document):
    with pytest.raises(BadRequest):
        parse_rule(document, ["1.0", "2.0"])


def test_the_agreement_ratio_counts_matches_over_comparisons():
    registry = CollectorRegistry()
    metrics = ShadowMetrics(registry)
    for match in (True, True, False, True):
        metrics.compared("m", "2.0", match)
    labels = {"model_name": "m", "model_version": "2.0"}
    assert registry.get_sample_value("tsf_shadow_agreement_ratio", labels) == 0.75
    assert registry.get_sample_value("tsf_shadow_agreement_total",
                                     dict(labels, result="mismatch")) == 1

"""Weight parsing, weighted and sticky choice, and removal of a version from a split."""

from __future__ import annotations

import collections

import pytest

from tsf.errors import BadRequest
from tsf.serving.traffic import TrafficSplit, header_value, key_point, parse_weights


@pytest.mark.parametrize("document, text", [
    ({"1.0": -5}, ">= 0"), ({"1.0": "10"}, "must be a number"), ({"1.0": None}, "number"),
    ({"1.0": False}, "number"), ({"3.0": 1}, "not registered"), ({"1.0": 0}, "above 0"),
    ({}, "non-empty"), ([1], "non-empty JSON object"), (float("nan"), "object"),
    ({"1.0": float("inf")}, "number"),
])
def test_invalid_weights_are_refused_with_the_reason(document, text):
    with pytest.raises(BadRequest, match=text):
        parse_weights(document, ["1.0", "2.0"])


def test_valid_weights_are_floats_and_zero_is_allowed_beside_others():
    assert parse_weights({"1.0": 90, "2.0": 0}, ["1.0", "2.0"]) == {"1.0": 90.0, "2.0": 0.0}


def test_a_random_choice_follows_the_weights():
    split = TrafficSplit({"1.0": 70, "2.0": 30})
    counts = collections.Counter(split.choose() for _ in range(20000))
    assert abs(counts["2.0"] / 20000 - 0.30) < 0.015


def test_a_zero_weight_version_is_never_chosen():
    split = TrafficSplit({"1.0": 0, "2.0": 1})
    assert {split.choose() for _ in range(500)} == {"2.0"}
    assert {split.choose(f"k{i}") for i in range(500)} == {"2.0"}


def test_routing_keys_are_stable_and_spread_by_the_weights():
    split = TrafficSplit({"a": 25, "b": 75})
    keys = [f"user-{i}" for i in range(8000)]
    first = [split.choose(k) for k in keys]
    assert first == [TrafficSplit({"b": 75, "a": 25}).choose(k) for k in keys]  # order-free
    assert abs(first.count("a") / len(keys) - 0.25) < 0.02
    assert 0 <= key_point("x") < 1 and key_point("x") == key_point("x")


def test_removing_a_version_renormalises_the_rest_and_the_last_weighted_one_drops_it():
    split = TrafficSplit({"1.0": 50, "2.0": 25, "3.0": 25})
    rest = split.without("3.0")
    assert rest is not None and rest.percentages() == {"1.0": 66.6667, "2.0": 33.3333}
    single = rest.without("1.0")
    assert single is not None and single.percentages() == {"2.0": 100.0}
    assert TrafficSplit({"1.0": 0, "2.0": 1}).without("2.0") is None


def test_header_lookup_ignores_case():
    assert header_value({"x-routing-key": "k"}, "X-Routing-Key") == "k"
    assert header_value({"Other": "k"}, "X-Routing-Key") is None

"""The autoscaler's decisions and its settings."""

from __future__ import annotations

import pytest

from tsf.config.autoscale import AutoscaleSettings, autoscale_settings
from tsf.config.settings import ServerConfig
from tsf.errors import BadRequest
from tsf.serving.autoscale import Autoscaler

SETTINGS = AutoscaleSettings(target_queue_ms=100, scale_up_after_s=2, scale_down_idle_s=10)


def test_a_worker_is_added_only_after_the_wait_stayed_above_target_for_the_period():
    scaler = Autoscaler(SETTINGS)
    assert scaler.decide(0.0, 0.5, 0, workers=1, low=1, high=3) == 0
    assert scaler.decide(1.0, 0.5, 0, workers=1, low=1, high=3) == 0
    assert scaler.decide(2.0, 0.5, 0, workers=1, low=1, high=3) == 1
    # the next worker needs another full period above the target
    assert scaler.decide(2.5, 0.5, 0, workers=2, low=1, high=3) == 0
    assert scaler.decide(4.6, 0.5, 0, workers=2, low=1, high=3) == 1


def test_a_dip_below_target_restarts_the_period():
    scaler = Autoscaler(SETTINGS)
    scaler.decide(0.0, 0.5, 0, 1, 1, 3)
    scaler.decide(1.5, 0.05, 0, 1, 1, 3)
    assert scaler.decide(2.5, 0.5, 0, 1, 1, 3) == 0
    assert scaler.decide(4.5, 0.5, 0, 1, 1, 3) == 1


def test_observed_batch_waits_count_until_the_next_decision():
    scaler = Autoscaler(SETTINGS)
    scaler.observe_wait(0.3)
    scaler.decide(0.0, 0.0, 0, 1, 1, 3)
    scaler.observe_wait(0.3)
    assert scaler.decide(2.0, 0.0, 0, 1, 1, 3) == 1
    assert scaler.decide(4.0, 0.0, 0, 2, 1, 3) == 0  # the observation was used up


def test_never_above_max_nor_below_min():
    scaler = Autoscaler(SETTINGS)
    assert [scaler.decide(t, 1.0, 0, 3, 1, 3) for t in range(10)] == [0] * 10
    assert scaler.decide(20, 0.0, 60, 1, 1, 3) == 0


def test_an_idle_worker_is_removed_after_the_cool_down_when_nothing_waits():
    scaler = Autoscaler(SETTINGS)
    assert scaler.decide(0, 0.0, 9.9, 3, 1, 3) == 0
    assert scaler.decide(1, 0.0, 10.0, 3, 1, 3) == -1
    assert scaler.decide(2, 0.01, 10.0, 3, 1, 3) == 0  # a request is queued


def test_settings_merge_server_defaults_and_model_config():
    config = ServerConfig(autoscale_target_queue_ms=50)
    merged = autoscale_settings(config, {"autoscale": {"scaleUpAfterS": 1,
                                                       "scale_down_idle_s": 5}})
    assert merged == AutoscaleSettings(target_queue_ms=50, scale_up_after_s=1,
                                       scale_down_idle_s=5)
    assert autoscale_settings(config, {}) == AutoscaleSettings(target_queue_ms=50)


@pytest.mark.parametrize("declared", [[1], {"target_queue_ms": -1}, {"target_queue_ms": "x"},
                                      {"target_queue_ms": True}, {"unknown": 1},
                                      {"scale_up_after_s": float("nan")}])
def test_bad_settings_are_refused(declared):
    with pytest.raises(BadRequest, match="autoscale"):
        autoscale_settings(ServerConfig(), {"autoscale": declared})

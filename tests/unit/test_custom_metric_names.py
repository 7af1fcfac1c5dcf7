"""Handler counters are exposed under the name the handler gave, as TorchServe exposes them."""
from prometheus_client import generate_latest

from tsf.telemetry.metrics import ServerMetrics


def _lines(metrics: ServerMetrics) -> list[str]:
    return generate_latest(metrics.registry).decode().splitlines()


def test_counter_keeps_torchserve_name():
    m = ServerMetrics()
    # what ts's add_metric_to_cache(..., metric_type=MetricTypes.COUNTER) + add_or_update send
    for value in (1, 2):
        m.record_custom("mnist", "1.0", [{"name": "InferenceRequestCount", "kind": "counter",
                                          "value": value, "labels": {}}])
    lines = _lines(m)
    assert 'InferenceRequestCount{model_name="mnist",model_version="1.0"} 3.0' in lines
    assert "# TYPE InferenceRequestCount untyped" in lines
    assert not any(l.startswith("InferenceRequestCount_total") for l in lines)


def test_counter_named_total_is_a_counter():
    m = ServerMetrics()
    m.record_custom("m", "1", [{"name": "rows_total", "kind": "counter", "value": 2,
                                "labels": {"c": "r"}}])
    lines = _lines(m)
    assert "# TYPE rows_total counter" in lines
    assert 'rows_total{c="r",model_name="m",model_version="1"} 2.0' in lines


def test_counter_clashing_with_a_server_metric_is_dropped():
    m = ServerMetrics()
    m.record_custom("m", "1", [{"name": "tsf_requests_total", "kind": "counter", "value": 5,
                                "labels": {}}])
    m.record_custom("m", "1", [{"name": "bad", "kind": "counter", "value": -1, "labels": {}}])
    text = "\n".join(_lines(m))
    assert 'tsf_requests_total{model_name="m"' not in text
    assert "\nbad{" not in text

"""``tsf_inflight_requests{model_name}``, the autoscaling load figure: it counts requests a
model accepted and has not answered, over HTTP, and drops back to zero once they are answered
or refused."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from tsf.outcome import Outcome
from tsf.telemetry.metrics import ServerMetrics


class _Version:
    name, version = "m", "1"


class _Manager:
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics


def inflight(text: str, model: str) -> float:
    match = re.search(r'^tsf_inflight_requests\{model_name="%s"\} (\S+)$' % re.escape(model),
                      text, re.M)
    return float(match.group(1)) if match else 0.0


def test_outcome_counts_in_flight_from_acceptance_to_close():
    metrics = ServerMetrics()
    gauge = lambda: metrics.inflight.labels("m").value  # noqa: E731
    outcome = Outcome(metrics=metrics)
    assert gauge() == 0
    outcome.model_version = _Version()
    outcome.model_version = _Version()      # set twice (a retry path): still one request
    assert gauge() == 1
    outcome.close(SimpleNamespace(manager=_Manager(metrics)), "predict", "default")
    assert gauge() == 0
    refused = Outcome(metrics=metrics)      # never accepted by a model: never counted
    refused.close(SimpleNamespace(manager=_Manager(metrics)), "predict", "default")
    assert gauge() == 0


@pytest.mark.slow
def test_inflight_gauge_rises_with_load_and_falls_after(tsf_server, model_store):
    server = tsf_server(model_store=model_store, models=["snooze=sleepy.mar"],
                        config={"batch_size": 1, "job_queue_size": 20})
    deadline = time.monotonic() + 120
    while server.get("/ping").status_code != 200:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(server.post, "/predictions/snooze", data=b"1.5",
                               headers={"Content-Type": "text/plain"}) for _ in range(4)]
        peak = 0.0
        while not all(f.done() for f in futures):
            peak = max(peak, inflight(server.scrape(), "snooze"))
            time.sleep(0.1)
        assert [f.result().status_code for f in futures] == [200] * 4
    assert peak >= 3, peak          # one running, the others queued behind the single worker
    assert inflight(server.scrape(), "snooze") == 0
    # a refused request (no such version) is never counted
    assert server.post("/predictions/snooze/9.9", data=b"0").status_code == 404
    assert inflight(server.scrape(), "snooze") == 0

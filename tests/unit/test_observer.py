"""Per-batch observation: what a batch, an abandoned request and a worker change record."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tsf.batching.queue import BatchQueue, Job
from tsf.config.autoscale import AutoscaleSettings
from tsf.serving.autoscale import Autoscaler
from tsf.serving.observer import VersionObserver, live_workers
from tsf.serving.registry import Registry
from tsf.telemetry.metrics import ServerMetrics
from tsf.telemetry.tracing import Tracing
from tsf.workers.messages import BatchResult, Request

LABELS = {"model_name": "m", "model_version": "1.0"}


class RecordingTracing(Tracing):
    enabled = True

    def __init__(self) -> None:
        self.batches: list[tuple] = []

    def record_batch(self, *args) -> None:
        self.batches.append(args)


def observer_for(tracing: Tracing | None = None, registry: Registry | None = None
                 ) -> tuple[VersionObserver, list[tuple]]:
    """An observer of model ``m`` version 1.0, and what reaches ``tsf_record_metric``."""
    seen: list[tuple] = []
    metrics = ServerMetrics(observer=lambda *sample: seen.append(sample))
    pool = SimpleNamespace(live_count=2, restarts=1)
    observer = VersionObserver("m", "1.0", queue=BatchQueue(8), pool=pool,
                               autoscaler=Autoscaler(AutoscaleSettings(target_queue_ms=100,
                                                                       scale_up_after_s=0)),
                               registry=registry or Registry(), metrics=metrics,
                               tracing=tracing or Tracing())
    return observer, seen


def fake_batch(arrivals: list[float], label_versions: list[str]) -> list[Job]:
    loop = asyncio.new_event_loop()
    jobs = []
    for arrival, label in zip(arrivals, label_versions):
        job = Job(Request("r", []), loop.create_future(), label_version=label)
        job.arrival = arrival
        jobs.append(job)
    loop.close()
    return jobs


def sample(observer: VersionObserver, name: str, **labels: str) -> float | None:
    return observer.metrics.registry.get_sample_value(name, dict(LABELS, **labels))


def test_a_batch_records_waits_size_stages_custom_metrics_and_depth():
    observer, seen = observer_for()
    batch = fake_batch([10.0, 10.2], ["default", "1.0"])
    result = BatchResult([], timings={"preprocess": 0.01, "inference": 0.03},
                         metrics=[{"name": "images_total", "kind": "counter", "value": 2,
                                   "labels": {}}])
    observer.batch_done(batch, result, started=10.5, finished=10.6, worker_id="w1")

    assert sample(observer, "tsf_queue_duration_seconds_count") == 2
    assert sample(observer, "tsf_queue_duration_seconds_sum") == pytest.approx(0.8)
    assert sample(observer, "tsf_batch_size_count") == 1
    assert sample(observer, "tsf_batch_size_sum") == 2
    assert sample(observer, "tsf_stage_duration_seconds_sum",
                  stage="inference") == pytest.approx(0.03)
    assert sample(observer, "tsf_queue_depth") == 0
    assert sample(observer, "images_total") == 2
    # TorchServe's queue counter is labelled with the version the client asked for
    registry = observer.metrics.registry
    assert registry.get_sample_value("ts_queue_latency_microseconds", {
        "uuid": observer.metrics.ts.uuid, "model_name": "m",
        "model_version": "default"}) == pytest.approx(0.5e6)
    assert registry.get_sample_value("ts_queue_latency_microseconds", {
        "uuid": observer.metrics.ts.uuid, "model_name": "m",
        "model_version": "1.0"}) == pytest.approx(0.3e6)
    # the same values reach tsf_record_metric
    assert ("tsf_batch_size", "histogram", 2, LABELS) in seen
    assert ("images_total", "counter", 2.0, LABELS) in seen
    # the autoscaler saw the 0.5 s wait (over its 100 ms target) though nothing is queued now
    assert observer.autoscaler.decide(now=0.0, queued_wait=0.0, longest_idle=0.0, workers=1,
                                      low=1, high=2) == 1


def test_a_batch_is_traced_only_when_tracing_is_on():
    tracing = RecordingTracing()
    observer, _ = observer_for(tracing)
    batch = fake_batch([1.0], ["default"])
    result = BatchResult([], stamps=[])
    observer.batch_done(batch, result, started=2.0, finished=3.0, worker_id="w7")
    assert tracing.batches == [("m", "1.0", "w7", batch, result, 2.0, 3.0)]


def test_abandoned_requests_are_counted_by_stage():
    observer, _ = observer_for()
    observer.abandoned("queued")
    observer.abandoned("queued")
    observer.abandoned("running")
    assert sample(observer, "tsf_requests_abandoned_total", stage="queued") == 2
    assert sample(observer, "tsf_requests_abandoned_total", stage="running") == 1


def test_worker_figures_are_those_of_the_registered_pool():
    registry = Registry()
    observer, _ = observer_for(registry=registry)
    observer.workers_changed()  # not registered yet: its own pool
    assert sample(observer, "tsf_workers_alive") == 2
    assert sample(observer, "tsf_worker_restarts") == 1
    # during a rolling update the registered version's pool is the one reported
    registry.add(SimpleNamespace(name="m", version="1.0",
                                 pool=SimpleNamespace(live_count=5, restarts=0)))
    observer.workers_changed()
    assert sample(observer, "tsf_workers_alive") == 5
    observer.memory_restart()
    assert sample(observer, "tsf_worker_memory_restarts_total") == 1


def test_live_workers_lists_alive_and_busy_workers():
    registry = Registry()
    workers = {"a": SimpleNamespace(alive=True, status="READY"),
               "b": SimpleNamespace(alive=False, status="BUSY"),
               "c": SimpleNamespace(alive=False, status="DEAD")}
    registry.add(SimpleNamespace(name="m", version="1.0", pool=SimpleNamespace(workers=workers)))
    assert [(m, v, w) for m, v, w in live_workers(registry)] == [
        ("m", "1.0", workers["a"]), ("m", "1.0", workers["b"])]

"""Per-batch observation: what a model version's batches, abandoned requests and worker changes
add to the metrics, the traces and the version's autoscaler.

The manager gives each version's :class:`~tsf.batching.batcher.Batcher` a :class:`VersionObserver`
and points the version's pool at it; :func:`live_workers` feeds the per-worker figures read at
scrape time.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..batching.queue import BatchQueue, Job
from ..telemetry.metrics import ServerMetrics
from ..telemetry.tracing import Tracing
from ..workers.messages import BatchResult
from ..workers.pool import WorkerPool
from .autoscale import Autoscaler
from .registry import Registry


class VersionObserver:
    """Records one model version's batches, abandoned requests and worker changes (the
    :class:`~tsf.batching.batcher.BatchObserver` of its batcher)."""

    def __init__(self, name: str, version: str, *, queue: BatchQueue, pool: WorkerPool,
                 autoscaler: Autoscaler, registry: Registry, metrics: ServerMetrics,
                 tracing: Tracing) -> None:
        self.name = name
        self.version = version
        self.queue = queue
        self.pool = pool
        self.autoscaler = autoscaler
        self.registry = registry
        self.metrics = metrics
        self.tracing = tracing

    def batch_done(self, batch: list[Job], result: BatchResult, started: float,
                   finished: float, worker_id: str) -> None:
        """Queue waits (metrics and autoscaler), batch size, stage times, the handler's custom
        metrics, the queue depth left, and with tracing on each job's stages."""
        m, name, version = self.metrics, self.name, self.version
        for job in batch:
            self.autoscaler.observe_wait(started - job.arrival)
            m.record_queue(name, version, job.label_version, started - job.arrival)
        m.record_batch(name, version, len(batch), result.timings)
        if result.metrics:
            m.record_custom(name, version, result.metrics)
        m.queue_depth.labels(name, version).set(len(self.queue))
        if self.tracing.enabled:
            self.tracing.record_batch(name, version, worker_id, batch, result, started,
                                      finished)

    def abandoned(self, stage: str) -> None:
        """Count a request whose client went away, by where it was (queued or running)."""
        self.metrics.abandoned.labels(self.name, self.version, stage).inc()

    def workers_changed(self) -> None:
        """Report the live workers and restarts of the version the registry serves."""
        # during a rolling update two pools share the labels: report the registered one's
        current = self.registry.get_exact(self.name, self.version)
        pool = current.pool if current is not None else self.pool
        self.metrics.workers_alive.labels(self.name, self.version).set(pool.live_count)
        self.metrics.worker_restarts.labels(self.name, self.version).set(pool.restarts)

    def memory_restart(self) -> None:
        """Count a worker restarted for going over the memory limit."""
        self.metrics.worker_memory_restarts.labels(self.name, self.version).inc()


def live_workers(registry: Registry) -> Iterator[tuple[str, str, Any]]:
    """(model, version, worker) for every worker alive or busy, for the per-worker figures."""
    for mv in list(registry):
        for worker in list(mv.pool.workers.values()):
            if worker.alive or worker.status == "BUSY":
                yield mv.name, mv.version, worker

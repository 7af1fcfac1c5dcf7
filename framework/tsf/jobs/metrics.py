"""The jobs' metrics, on the server's Prometheus registry.

* ``tsf_jobs{status}``: jobs in the store by status (the whole store: with Redis, every
  replica reports the same figures);
* ``tsf_jobs_oldest_queued_seconds``: how long the oldest queued job has waited;
* ``tsf_jobs_backlog_per_worker``: queued jobs per live worker of every replica that runs
  jobs, the figure to scale replicas on (as SageMaker scales asynchronous endpoints on
  ``ApproximateBacklogSizePerInstance``; see ``deploy/kubernetes/keda/``);
* counters of this replica: ``tsf_jobs_submitted_total{model_name}``,
  ``tsf_jobs_finished_total{model_name,status}``, ``tsf_job_callbacks_total{outcome}``, and
  the histogram ``tsf_job_duration_seconds{model_name}`` (submit to end).

The store's figures are read every few seconds off the request path, not at scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from .records import STATUSES
from .store import Stats

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    14400.0, 86400.0)


class JobMetrics:
    """Counters of this replica, and gauges from the store's last :class:`Stats`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stats = Stats()
        self.submitted = Counter("tsf_jobs_submitted", "Jobs submitted to this replica",
                                 ("model_name",), registry=registry)
        self.finished = Counter("tsf_jobs_finished", "Jobs this replica ran to an end, by "
                                "status (succeeded, failed)", ("model_name", "status"),
                                registry=registry)
        self.callbacks = Counter("tsf_job_callbacks", "Job callbacks by outcome (delivered, "
                                 "failed)", ("outcome",), registry=registry)
        self.duration = Histogram("tsf_job_duration_seconds", "Time from a job's submit to "
                                  "its end", ("model_name",), buckets=DURATION_BUCKETS,
                                  registry=registry)
        registry.register(self)

    def collect(self):
        stats = self.stats
        jobs = GaugeMetricFamily("tsf_jobs", "Jobs in the job store by status",
                                 labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], stats.counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily("tsf_jobs_oldest_queued_seconds",
                                "Seconds the oldest queued job has waited",
                                value=stats.oldest_queued)
        queued = stats.counts.get("queued", 0)
        yield GaugeMetricFamily("tsf_jobs_backlog_per_worker", "Queued jobs per live worker "
                                "of the replicas that run jobs (all queued jobs when none)",
                                value=queued / stats.workers if stats.workers else queued)

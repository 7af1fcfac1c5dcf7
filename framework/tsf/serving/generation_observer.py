"""What a generative model's requests add to the metrics: time to first token, inter-token
latency, tokens, how requests finished, the load of its engine workers (see
:mod:`tsf.telemetry.generation_metrics`).

The :class:`~tsf.batching.engine_lane.EngineLane` of an engine model reports to a
:class:`GenerationObserver`; per-request metrics and traces come from the adapters, as for any
model.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..batching.queue import Job
from ..workers.messages import Answer
from .observer import VersionObserver

log = logging.getLogger("tsf.metrics")


class GenerationObserver(VersionObserver):
    """Records one engine model version's requests and its workers' load."""

    @property
    def _generation(self) -> Any:
        return self.metrics.generation

    def answered(self, job: Job, answer: Answer, worker_id: str) -> None:
        """Queue wait, tokens, time to first token and inter-token latency of one request."""
        m, name, version = self._generation, self.name, self.version
        wait = job.dispatched - job.arrival
        self.autoscaler.observe_wait(wait)
        self.metrics.record_queue(name, version, job.label_version, wait)
        if answer.error or answer.status >= 400:
            reason = "cancelled" if answer.status == 499 else "error"
            m.finished.labels(name, version, reason).inc()
            return
        try:
            document = json.loads(answer.body)
        except ValueError:
            return
        usage = document.get("usage") or {}
        m.prompt_tokens.labels(name, version).inc(usage.get("prompt_tokens", 0))
        m.completion_tokens.labels(name, version).inc(usage.get("completion_tokens", 0))
        for choice in document.get("choices") or ():
            m.finished.labels(name, version, choice.get("finish_reason") or "stop").inc()
        timing = document.get("timing") or {}
        if timing.get("ttft") is not None:
            m.ttft.labels(name, version).observe(wait + timing["ttft"])
        itl = m.itl.labels(name, version)
        for gap in timing.get("itl") or ():
            itl.observe(gap)

    def load(self, running: int, waiting: int) -> None:
        m = self._generation
        m.running.labels(self.name, self.version).set(running)
        m.waiting.labels(self.name, self.version).set(waiting)
        self.metrics.queue_depth.labels(self.name, self.version).set(waiting)

    def engine_stats(self, worker: Any, stats: dict) -> None:
        """Cache use over the version's workers, and the sizes of the decode steps."""
        m = self._generation
        used = total = 0
        for other in list(self.pool.workers.values()):
            report = getattr(other, "stats", None) or {}
            used += int(report.get("cache_used", 0))
            total += int(report.get("cache_total", 0))
        m.cache_usage.labels(self.name, self.version).set(used / total if total else 0.0)
        steps = m.step_sequences.labels(self.name, self.version)
        for size, count in (stats.get("steps") or {}).items():
            for _ in range(min(int(count), 10000)):
                steps.observe(int(size))

"""Shadow traffic: a share of a model's live requests is copied to another version.

The copy is queued on the shadow version without being awaited: the live answer never waits
for it and never fails because of it.  Shadow answers are dropped; their latency and status are
counted under ``tsf_shadow_*`` metrics, with how often the shadow's answer bytes equal the live
answer's (``tsf_shadow_agreement_total{result="match"|"mismatch"}`` and the ratio gauge).  A
copy is dropped, and counted, when the shadow version has no worker, is gone, or its queue is
half full: the other half stays for requests that name the shadow version directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..batching.queue import Job
from ..errors import BadRequest, TsfError
from ..telemetry.metrics import LATENCY_BUCKETS, MODEL_LABELS

log = logging.getLogger("tsf.shadow")


@dataclass(frozen=True)
class ShadowRule:
    """Copy ``percent`` % of a model's live requests to ``version``."""

    version: str
    percent: float

    def to_dict(self) -> dict:
        return {"version": self.version, "percent": self.percent}


def parse_rule(document: Any, versions: list[str]) -> ShadowRule:
    """A validated rule from ``{"version": "2.0", "percent": 20}``; BadRequest otherwise."""
    if not isinstance(document, dict) or set(document) - {"version", "percent"}:
        raise BadRequest('the shadow rule must be a JSON object {"version": "2.0", '
                         '"percent": 20}')
    version, percent = document.get("version"), document.get("percent", 100)
    if not isinstance(version, str) or version not in versions:
        raise BadRequest(f"shadow version {version!r:.50} is not registered for this model "
                         f"(registered: {', '.join(sorted(versions))})")
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) \
            or not math.isfinite(percent) or not 0 < percent <= 100:
        raise BadRequest(f"shadow percent must be a number above 0 and at most 100, got "
                         f"{percent!r:.50}")
    return ShadowRule(version, float(percent))


class ShadowMetrics:
    """The ``tsf_shadow_*`` series of one server."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = MODEL_LABELS
        self.requests = Counter("tsf_shadow_requests", "Shadow copies answered, by the shadow "
                                "version and its status", labels + ("code",), registry=registry)
        self.seconds = Histogram("tsf_shadow_duration_seconds", "Time from queueing a shadow "
                                 "copy to its answer", labels, buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.dropped = Counter("tsf_shadow_dropped", "Shadow copies not sent (reason: "
                               "queue_full, no_workers)", labels + ("reason",),
                               registry=registry)
        self.agreement = Counter("tsf_shadow_agreement", "Shadow answers whose bytes equal "
                                 "(match) or differ from (mismatch) the live answer",
                                 labels + ("result",), registry=registry)
        self.ratio = Gauge("tsf_shadow_agreement_ratio", "Share of compared shadow answers "
                           "equal to the live answer", labels, registry=registry)
        self._compared: dict[tuple[str, str], list[int]] = {}

    def compared(self, name: str, version: str, match: bool) -> None:
        self.agreement.labels(name, version, "match" if match else "mismatch").inc()
        counts = self._compared.setdefault((name, version), [0, 0])
        counts[0] += int(match)
        counts[1] += 1
        self.ratio.labels(name, version).set(counts[0] / counts[1])


class Shadowing:
    """The shadow rules of every model and the mirroring of live requests."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rules: dict[str, ShadowRule] = {}
        self.metrics = ShadowMetrics(registry)

    def forget(self, name: str, version: str | None = None) -> None:
        """Drop ``name``'s rule (only if it shadows ``version``, when given)."""
        rule = self.rules.get(name)
        if rule is not None and (version is None or rule.version == version):
            del self.rules[name]
            log.info("shadow traffic of model %s to version %s stopped", name, rule.version)

    def mirror(self, registry: Any, live_version: str, live: Job, name: str) -> None:
        """Maybe queue a copy of a live job on the model's shadow version; never raises and
        never waits."""
        rule = self.rules.get(name)
        if rule is None or rule.version == live_version or \
                random.random() * 100.0 >= rule.percent:
            return
        try:
            self._send(registry, rule, live, name)
        except Exception:  # the live request must not notice
            log.exception("shadow copy of a request to %s failed", name)

    def _send(self, registry: Any, rule: ShadowRule, live: Job, name: str) -> None:
        m = self.metrics
        if not registry.exists(name, rule.version):
            return
        mv = registry.get(name, rule.version)
        if mv.pool.target == 0 and mv.pool.live_count == 0:
            m.dropped.labels(name, rule.version, "no_workers").inc()
            return
        if len(mv.queue) >= max(1, mv.queue.maxsize // 2):
            m.dropped.labels(name, rule.version, "queue_full").inc()
            return
        # the same message: nothing on the way to a worker changes it
        job = Job(live.request, asyncio.get_running_loop().create_future(),
                  label_version=live.label_version)
        try:
            mv.batcher.submit(job)
        except TsfError:
            m.dropped.labels(name, rule.version, "queue_full").inc()
            return
        started = time.monotonic()
        job.future.add_done_callback(
            lambda shadow: self._answered(name, rule.version, started, shadow, live.future))

    def _answered(self, name: str, version: str, started: float, shadow: asyncio.Future,
                  live: asyncio.Future) -> None:
        m = self.metrics
        m.seconds.labels(name, version).observe(time.monotonic() - started)
        if shadow.cancelled():
            return
        error = shadow.exception()
        if error is not None:
            code = error.status if isinstance(error, TsfError) else 500
            m.requests.labels(name, version, str(code)).inc()
            return
        answer = shadow.result()
        m.requests.labels(name, version, str(answer.status)).inc()
        if live.done():
            self._compare(name, version, answer.body, live)
        else:
            live.add_done_callback(lambda done: self._compare(name, version, answer.body, done))

    def _compare(self, name: str, version: str, body: bytes, live: asyncio.Future) -> None:
        if live.cancelled() or live.exception() is not None:
            return  # the live request failed or its client left: nothing to compare
        self.metrics.compared(name, version, bytes(body) == bytes(live.result().body))

"""Worker autoscaling between a model version's ``min_workers`` and ``max_workers``.

Every ``autoscale_interval_s`` the manager asks the version's :class:`Autoscaler` for a
decision.  One worker is added when the queue wait (the longest wait of the batches dispatched
since the last tick, or the age of the oldest request still queued) has stayed above
``target_queue_ms`` for ``scale_up_after_s``; one is removed when a worker has sat idle for
``scale_down_idle_s`` and nothing waits.  Never below min, never above max (nor the server's
``max_workers_per_model``); with min == max nothing changes.

Settings: server-wide defaults (``autoscale_*`` in the server config), overridden per model in
model-config.yaml::

    minWorkers: 1
    maxWorkers: 4
    autoscale:
      target_queue_ms: 100
      scale_up_after_s: 2
      scale_down_idle_s: 30
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter

from ..config.autoscale import AutoscaleSettings
from ..errors import TsfError

log = logging.getLogger("tsf.autoscale")


def decisions_counter(registry: CollectorRegistry) -> Counter:
    return Counter("tsf_autoscale_decisions", "Workers added (direction=up) or removed "
                   "(direction=down) by the autoscaler", ("model_name", "model_version",
                                                          "direction"), registry=registry)


class Autoscaler:
    """The scaling decisions of one model version, from its queue waits and idle workers."""

    def __init__(self, settings: AutoscaleSettings) -> None:
        self.settings = settings
        self._peak_wait = 0.0
        self._above_since: float | None = None

    def observe_wait(self, seconds: float) -> None:
        """A dispatched request waited ``seconds`` in the queue."""
        self._peak_wait = max(self._peak_wait, seconds)

    def reset(self) -> None:
        self._peak_wait = 0.0
        self._above_since = None

    def decide(self, now: float, queued_wait: float, longest_idle: float, workers: int,
               low: int, high: int) -> int:
        """+1 (add a worker), -1 (remove one) or 0, at time ``now`` (seconds).

        ``queued_wait``: age of the oldest queued request (0 if none); ``longest_idle``: how long
        the longest-idle worker has been idle (0 if none is); ``workers``: the current target.
        """
        wait = max(self._peak_wait, queued_wait)
        self._peak_wait = 0.0
        if wait * 1000.0 > self.settings.target_queue_ms:
            if self._above_since is None:
                self._above_since = now
            if workers < high and now - self._above_since >= self.settings.scale_up_after_s:
                self._above_since = None  # the next worker needs another full period
                return 1
            return 0
        self._above_since = None
        if workers > low and queued_wait == 0 and \
                longest_idle >= self.settings.scale_down_idle_s:
            return -1
        return 0


async def autoscale(mv: Any, config: Any, decisions: Counter,
                    paused: Callable[[], bool]) -> None:
    """Apply ``mv.autoscaler``'s decisions to a model version's pool until the pool closes;
    no decision while ``paused()`` (a load or scale call is under way)."""
    scaler: Autoscaler = mv.autoscaler
    pool, cap = mv.pool, config.max_workers_per_model
    while not pool.closing:
        await asyncio.sleep(config.autoscale_interval_s)
        low = mv.settings.min_workers
        high = min(mv.settings.max_workers, cap) if cap > 0 else mv.settings.max_workers
        if high <= low or paused() or pool.closing:
            scaler.reset()
            continue
        now = time.monotonic()
        target = pool.target
        step = scaler.decide(now, mv.queue.oldest_wait(now), pool.longest_idle(now), target,
                             low, high)
        if not step:
            continue
        direction = "up" if step > 0 else "down"
        log.info("autoscaling %s version %s %s from %d to %d workers", mv.name, mv.version,
                 direction, target, target + step)
        decisions.labels(mv.name, mv.version, direction).inc()
        try:
            await pool.scale(target + step)
        except TsfError as exc:
            log.error("autoscaling %s version %s to %d workers failed: %s", mv.name, mv.version,
                      target + step, exc)

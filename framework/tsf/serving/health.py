"""Server health from the workers of each model: Healthy, Degraded or Unhealthy.

The rule (docs/inference-api.md states it for users):

* A worker *serves* when its process is live and it is idle, or busy on its current batch for
  less than the model's stall threshold, ``min(response_timeout, worker_stall_seconds)``.
* A model version is ``Ready`` when as many workers serve as its target, ``Degraded`` when fewer
  but at least one, ``Loading`` or ``Unavailable`` when none does (while its first workers start,
  or after), and ``ScaledToZero`` when its target is 0 (it serves nothing and asks for nothing).
* The server is ``Unhealthy`` (503) while its startup models are still being fetched and
  registered, while some model version is ``Loading`` or ``Unavailable``,
  or while a model named in ``load_models`` has failed to load and no version of that name has
  been registered since; ``Degraded`` (200) while some model version is ``Degraded``; otherwise
  ``Healthy`` (200).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .registry import ModelVersion

HEALTHY, DEGRADED, UNHEALTHY = "Healthy", "Degraded", "Unhealthy"
READY, MODEL_DEGRADED, LOADING, UNAVAILABLE, SCALED_TO_ZERO = (
    "Ready", "Degraded", "Loading", "Unavailable", "ScaledToZero")


@dataclass
class ModelHealth:
    """The health of one model version."""

    name: str
    version: str
    state: str
    serving: int
    live: int
    target: int

    def to_dict(self) -> dict:
        return {"modelName": self.name, "modelVersion": self.version, "state": self.state,
                "servingWorkers": self.serving, "liveWorkers": self.live,
                "targetWorkers": self.target}

    def problem(self) -> str:
        return (f"{self.name} {self.version}: {self.serving} of {self.target} workers serving "
                f"({self.state})")


@dataclass
class Health:
    """The server's health: its status, each model's, and the startup models that failed."""

    status: str
    models: list[ModelHealth] = field(default_factory=list)
    failed_startup_models: dict[str, str] = field(default_factory=dict)
    starting: bool = False  # the startup models are still being registered

    @property
    def ok(self) -> bool:
        """Able to serve every model it has (Healthy or Degraded)."""
        return self.status != UNHEALTHY

    def problems(self) -> list[str]:
        out = [m.problem() for m in self.models if m.state not in (READY, SCALED_TO_ZERO)]
        out += [f"startup model {name} failed to load: {reason}"
                for name, reason in self.failed_startup_models.items()]
        if self.starting:
            out.append("startup models are still being registered")
        return out


def model_health(mv: ModelVersion) -> ModelHealth:
    pool = mv.pool
    serving, target = pool.serving_count, pool.target
    if target == 0:
        state = SCALED_TO_ZERO
    elif serving >= target:
        state = READY
    elif serving > 0:
        state = MODEL_DEGRADED
    elif pool.starting_count and pool.live_count == 0 and pool.restarts == 0:
        state = LOADING
    else:
        state = UNAVAILABLE
    return ModelHealth(mv.name, mv.version, state, serving, pool.live_count, target)


def assess(models: Iterable[ModelVersion], failed_startup_models: Mapping[str, str],
           starting: bool = False) -> Health:
    """Apply the rule above to the registered model versions (``starting``: the startup models
    are still being fetched and registered)."""
    models = list(models)
    registered = {mv.name for mv in models}
    failed = {name: reason for name, reason in failed_startup_models.items()
              if name not in registered}
    states = [model_health(mv) for mv in models]
    if starting or failed or any(m.state in (LOADING, UNAVAILABLE) for m in states):
        status = UNHEALTHY
    elif any(m.state == MODEL_DEGRADED for m in states):
        status = DEGRADED
    else:
        status = HEALTHY
    return Health(status, states, failed, starting)

"""What the :class:`~tsf.serving.manager.ModelManager`'s lifecycle calls take and give back.

Adapters (HTTP, gRPC, SageMaker, the snapshot, the model-store watch, workflows) turn their
input into a :class:`RegisterRequest` of typed values; every change the manager makes answers
with a :class:`ManagerResult`, which both HTTP and gRPC send as the same JSON object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RegisterRequest:
    """A model registration, as TorchServe's register parameters name it.

    ``url`` must not be empty.  A setting left ``None`` falls back to the archive's
    model-config.yaml, then to the server's default.  ``initial_workers`` is the version's
    ``min_workers``; ``max_workers`` (TorchServe's snapshots and ``models`` key name it) bounds
    autoscaling.
    """

    url: str
    model_name: str | None = None
    handler: str | None = None
    sha256: str | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    initial_workers: int | None = None
    max_workers: int | None = None
    response_timeout: int | None = None
    startup_timeout: int | None = None
    synchronous: bool = True
    replace: bool = False
    capture: Any = None  # a ``capture`` value (tsf.config.capture) replacing model-config's

    def settings(self) -> dict[str, int | None]:
        """The settings it overrides, under :func:`tsf.config.settings.model_settings`' names."""
        return {"batch_size": self.batch_size, "max_batch_delay": self.max_batch_delay,
                "min_workers": self.initial_workers, "max_workers": self.max_workers,
                "response_timeout": self.response_timeout,
                "startup_timeout": self.startup_timeout}


@dataclass(frozen=True)
class ManagerResult:
    """What a lifecycle change did: the HTTP status that reports it, and TorchServe's status
    message or, for traffic and shadow changes, the document that now applies."""

    code: int = 200
    message: str = ""
    document: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON object the management APIs answer: ``{"status": message}`` or the
        document."""
        return {"status": self.message} if self.document is None else self.document

"""What the composition root hands every protocol adapter: the server's parts, typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pluggy

    from .auth import Tokens
    from .config.settings import ServerConfig
    from .dataplane import DataPlane
    from .monitoring.monitor import Monitor
    from .jobs.service import JobService
    from .serving.manager import ModelManager
    from .telemetry.metrics import ServerMetrics
    from .telemetry.tracing import Tracing
    from .workflows.manager import WorkflowManager


@dataclass(frozen=True)
class Services:
    """The parts of one server that its HTTP handlers and gRPC servicers use.

    HTTP routes get it as ``services`` beside ``api``, the name of the API they belong to
    (``inference``, ``management``, ``metrics``), which picks the token that guards them.
    """

    config: ServerConfig
    manager: ModelManager
    metrics: ServerMetrics
    pm: pluggy.PluginManager
    tracing: Tracing
    tokens: Tokens
    workflows: WorkflowManager
    dataplane: DataPlane
    monitor: Monitor  # data capture, feedback and monitoring metrics
    jobs: JobService | None = None  # None with job_store=off

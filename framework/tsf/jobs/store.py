"""The job store: what every store does (:class:`JobStore`), and the store a server's
``job_store`` setting names (:func:`open_store`).

Two stores implement it: :class:`~tsf.jobs.sqlite_store.SqliteJobStore` (the default: one file
in the workspace, one server) and :class:`~tsf.jobs.redis_store.RedisJobStore` (replicas share
one queue and one result store).  Both give the same guarantees:

* a job is ``queued`` until a worker is sent its request, then ``running``; a runner holds
  (``owner``) the queued jobs it has taken from the store and the jobs it runs;
* a job is run at least once and its result written at most once: only the runner that holds
  a job may finish it, so a late answer from a runner that lost the job is dropped;
* a job whose runner died while a worker ran it is run again, ``job_max_attempts`` runs at
  most in all (``attempts`` counts the runs begun);
* a job and its result are kept ``job_ttl`` seconds after it ends (a queued job ``job_ttl``
  after it was submitted), then its input and result are removed and it reads ``expired``
  for another ``job_ttl``; then it is forgotten;
* inputs and results together take at most ``job_store_max_mb``: a submit past it gets 507.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadRequest
from .records import Claimed, JobRecord, StoredResult


@dataclass(frozen=True)
class StoreLimits:
    """The settings a store applies (from ``job_*`` in the server's configuration)."""

    max_attempts: int = 3
    ttl: float = 86400.0
    max_bytes: int = 1024 * 2**20
    inline_bytes: int = 65536
    visibility_timeout: float = 30.0

    @classmethod
    def from_config(cls, config: Any) -> "StoreLimits":
        return cls(max_attempts=max(1, config.job_max_attempts), ttl=config.job_ttl,
                   max_bytes=config.job_store_max_mb * 2**20,
                   inline_bytes=config.job_inline_bytes,
                   visibility_timeout=config.job_visibility_timeout)


@dataclass
class Finish:
    """How a run ended: ``succeeded`` with a result, or ``failed`` with an error document."""

    status: str
    result: StoredResult | None = None
    error: dict | None = None


@dataclass
class Stats:
    """The store's figures for metrics: jobs by status, the oldest queued job's age, and the
    live workers of every replica that runs jobs."""

    counts: dict[str, int] = field(default_factory=dict)
    oldest_queued: float = 0.0
    workers: int = 0


class JobStore(abc.ABC):
    """Keeps jobs, their inputs and their results; every method may be called from the event
    loop (none blocks it)."""

    kind = ""
    location = ""  # the file or URL, for messages

    @abc.abstractmethod
    async def open(self) -> None:
        """Check and prepare the store; raise JobStoreError naming it if it cannot be used."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def add(self, record: JobRecord, payload: bytes,
                  idempotency: tuple[str, str] | None) -> tuple[JobRecord, bool]:
        """Store a queued job and its request; ``idempotency`` is ``(key, digest of the
        request)``.  Returns the job and True, or the job the key already names and False
        (Conflict if that job was submitted with another request).  507 when full."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    async def result(self, job_id: str) -> StoredResult | None:
        """A succeeded job's answer (None for any other job)."""

    @abc.abstractmethod
    async def page(self, model: str | None, status: str | None, limit: int,
                   after: int) -> tuple[list[JobRecord], int | None]:
        """Jobs in submission order after ``after`` (a ``seq``), and the token of the next
        page (None on the last)."""

    @abc.abstractmethod
    async def cancel(self, job_id: str, now: float) -> JobRecord | None:
        """Cancel a queued or running job; the job as it is now (None: no such job)."""

    @abc.abstractmethod
    async def claim(self, owner: str, count: int, now: float) -> list[Claimed]:
        """Take up to ``count`` queued jobs (oldest first, and jobs whose runner went silent)
        for ``owner``: they stay ``queued`` (waiting for a worker) but are ``owner``'s."""

    @abc.abstractmethod
    async def mark_running(self, owner: str, job_ids: list[str], now: float) -> None:
        """``owner`` sent these jobs to a worker: ``running`` from ``now``, one attempt more."""

    @abc.abstractmethod
    async def heartbeat(self, owner: str, job_ids: list[str], now: float) -> set[str]:
        """``owner`` still runs ``job_ids``; the ids it lost (cancelled, taken over)."""

    @abc.abstractmethod
    async def finish(self, job_id: str, owner: str, outcome: Finish,
                     now: float) -> JobRecord | None:
        """Store how a run ended, if ``owner`` still holds the job (None otherwise)."""

    @abc.abstractmethod
    async def retry(self, job_id: str, owner: str, error: dict, now: float) -> JobRecord | None:
        """A run failed for a reason another run may not meet (its worker died): queued
        again, or failed with ``error`` once ``max_attempts`` runs are used."""

    @abc.abstractmethod
    async def release(self, job_id: str, owner: str) -> None:
        """Give a job back (this server is stopping): queued for any runner, its attempt (if
        it began) not counted."""

    @abc.abstractmethod
    async def recover(self, now: float) -> int:
        """At start: make jobs left running by a stopped server runnable again."""

    @abc.abstractmethod
    async def sweep(self, now: float) -> int:
        """Expire jobs past their time and forget expired ones past theirs; how many."""

    @abc.abstractmethod
    async def stats(self, now: float, owner: str, local_workers: int) -> Stats: ...

    @abc.abstractmethod
    async def set_callback(self, job_id: str, status: str) -> None: ...

    @abc.abstractmethod
    async def pending_callbacks(self, before: float, limit: int) -> list[JobRecord]:
        """Finished jobs whose callback was not delivered, that finished before ``before``."""


def open_store(setting: str, workspace: Path, limits: StoreLimits) -> JobStore | None:
    """The store ``job_store`` names (not opened yet), or None for ``off``."""
    value = setting.strip()
    if value.lower() in ("off", "none", "false", "disabled"):
        return None
    if value.lower() in ("", "sqlite"):
        from .sqlite_store import SqliteJobStore

        return SqliteJobStore(workspace / "jobs" / "jobs.db", limits)
    if value.startswith("sqlite:///"):
        from .sqlite_store import SqliteJobStore

        return SqliteJobStore(Path(value[len("sqlite://"):]), limits)
    if value.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisJobStore

        return RedisJobStore(value, limits)
    raise BadRequest(f"invalid job_store {setting!r}: use sqlite, sqlite:///path/jobs.db, "
                     "redis://host:port/db, unix:///path/redis.sock or off")

"""The job API as the protocol adapters call it: submit, read, list, cancel, read a result;
and the store's life with the server (open before listening, run once the startup models are
registered, stop with the drain)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import (BadRequest, Conflict, Forbidden, ModelNotFound, ResourceNotFound,
                      ServiceUnavailable, TsfError)
from ..workers.messages import Request
from .callbacks import CallbackSender, check_callback_url
from .metrics import JobMetrics
from .records import (CANCELLED, FAILED, FINISHED, MODEL, QUEUED, RUNNING, STATUSES,
                      SUCCEEDED, WORKFLOW, JobRecord, StoredResult, pack_request)
from .runner import JobRunner
from .store import JobStore, StoreLimits, open_store

log = logging.getLogger("tsf.jobs")

JOB_ID = re.compile(r"[0-9a-f]{32}")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
PAGE_LIMIT = 100


class JobFailed(TsfError):
    """``GET /jobs/{id}/result`` of a job that failed: 409, with the job's own error."""

    status, type = 409, "JobFailedException"

    def __init__(self, message: str, error: dict | None) -> None:
        super().__init__(message)
        self.error = error

    def to_dict(self) -> dict:
        return {**super().to_dict(), "error": self.error}


class JobGone(TsfError):
    status, type = 410, "JobExpiredException"


def request_digest(target: str, version: str | None, request: Request) -> str:
    """What makes two submits the same request (for Idempotency-Key): target, kind and parts."""
    digest = hashlib.sha256(f"{target}\0{version or ''}\0{request.kind}".encode())
    for part in request.parts:
        digest.update(f"\0{part.name}\0{part.ctype}\0{len(part.data)}\0".encode())
        digest.update(part.data)
    return digest.hexdigest()


class JobService:
    """One server's jobs: its store, its runner, its callbacks and metrics."""

    def __init__(self, config: Any, manager: Any, workflows: Any, registry: Any,
                 store: JobStore) -> None:
        self.config = config
        self.manager = manager
        self.workflows = workflows
        limits = StoreLimits.from_config(config)
        self.store = store
        self.owner = config.job_replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = JobMetrics(registry)
        self.callbacks = CallbackSender(self.store, config, self.metrics.callbacks)
        heartbeat = max(0.2, limits.visibility_timeout / 3) if self.store.kind == "redis" \
            else None
        self.runner = JobRunner(self.store, manager, workflows, self.owner, self.metrics,
                                self.callbacks, heartbeat, limits.ttl)
        self._opened = False

    @classmethod
    def create(cls, config: Any, manager: Any, workflows: Any, registry: Any,
               workspace: Path) -> "JobService | None":
        """The service of the store ``job_store`` names (None with ``off``)."""
        store = open_store(config.job_store, workspace, StoreLimits.from_config(config))
        return cls(config, manager, workflows, registry, store) if store is not None else None

    def _open_store(self) -> JobStore:
        if not self._opened:
            raise ServiceUnavailable("the server is stopping; send job requests to another "
                                     "replica")
        return self.store

    # --- life with the server ----------------------------------------------------------------
    async def open(self) -> None:
        """Open the store (JobStoreError names it when it cannot be used) and make the jobs a
        stopped server left running runnable again."""
        await self.store.open()
        self._opened = True
        recovered = await self.store.recover(time.time())
        log.info("job store: %s %s%s", self.store.kind, self.store.location,
                 f" ({recovered} job(s) left running by the last server queued again)"
                 if recovered else "")

    def start(self) -> None:
        """Begin running jobs (once the startup models are registered)."""
        self.runner.start()

    async def close(self, grace: float = 0.0) -> None:
        if not self._opened:
            return
        self._opened = False
        await self.runner.stop(grace)
        await self.store.close()

    # --- the API ------------------------------------------------------------------------------
    def _target(self, name: str, version: str | None) -> str:
        """What ``name`` names (a model or a workflow); 404 when neither, 403 for a model that
        belongs to a workflow."""
        registry = self.manager.registry
        if name in registry.names():
            registry.get(name, version)  # 404 for an unknown version
            owner = self.manager.owners.get(name)
            if owner is not None and name not in self.manager.shared_models:
                raise Forbidden(f"model {name} belongs to workflow {owner}: submit jobs to the "
                                "workflow")
            return MODEL
        if version is None and name in self.workflows.workflows:
            return WORKFLOW
        raise ModelNotFound(f"Model not found: {name}")

    async def submit(self, name: str, version: str | None, request: Request,
                     idempotency_key: str | None = None,
                     callback_url: str | None = None) -> tuple[JobRecord, bool]:
        """Store a job for ``name`` (a model, or a workflow); (the job, whether it is new)."""
        target = self._target(name, version)
        if callback_url is not None:
            callback_url = check_callback_url(callback_url, self.config)
        idempotency = None
        if idempotency_key is not None:
            if not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
                raise BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
            idempotency = (idempotency_key, request_digest(name, version, request))
        record = JobRecord(id=uuid.uuid4().hex, model=name, version=version, status=QUEUED,
                           created=time.time(), target=target, kind=request.kind,
                           callback_url=callback_url)
        record, created = await self._open_store().add(record, pack_request(request), idempotency)
        if created:
            self.metrics.submitted.labels(name).inc()
            self.runner.wake()
        return record, created

    async def get(self, job_id: str) -> JobRecord:
        store = self._open_store()
        record = await store.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if record is None:
            raise ResourceNotFound(f"job {job_id} not found (never submitted, or forgotten "
                                   "after job_ttl)")
        return record

    async def result(self, job_id: str) -> StoredResult:
        """The answer of a succeeded job; 404 until it is done, 409 if it failed or was
        cancelled, 410 once it expired."""
        record = await self.get(job_id)
        if record.status in (QUEUED, RUNNING):
            raise ResourceNotFound(f"job {job_id} is {record.status}: its result is not ready")
        if record.status == FAILED:
            message = (record.error or {}).get("message", "")
            raise JobFailed(f"job {job_id} failed: {message}", record.error)
        if record.status == CANCELLED:
            raise JobFailed(f"job {job_id} was cancelled", None)
        result = await self._open_store().result(job_id) if record.status == SUCCEEDED else None
        if result is None:
            raise JobGone(f"job {job_id} expired: its result was removed job_ttl "
                          f"({self.config.job_ttl:g} s) after it ended")
        return result

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job (it never runs) or a running one (its answer is dropped)."""
        before = await self.get(job_id)
        if before.status in FINISHED:
            raise Conflict(f"job {job_id} already ended ({before.status}); nothing to cancel")
        record = await self._open_store().cancel(job_id, time.time())
        self.runner.drop(job_id, "the job was cancelled")
        if record is None:
            raise ResourceNotFound(f"job {job_id} not found")
        if record.status != CANCELLED:
            raise Conflict(f"job {job_id} ended ({record.status}) before it could be cancelled")
        return record

    async def page(self, model: str | None, status: str | None, limit: str | None,
                   token: str | None) -> dict:
        """``GET /jobs``: one page, oldest first, and ``nextPageToken`` while more remain."""
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        if limit is not None and not (limit.isdigit() and 0 < int(limit)):
            raise BadRequest("limit must be a positive integer")
        if token is not None and not token.isdigit():
            raise BadRequest("page_token must be a token from nextPageToken")
        size = min(int(limit), PAGE_LIMIT) if limit else PAGE_LIMIT
        records, after = await self._open_store().page(model or None, status, size,
                                               int(token) if token else 0)
        body: dict[str, Any] = {"jobs": [r.to_dict() for r in records]}
        if after is not None:
            body["nextPageToken"] = str(after)
        return body

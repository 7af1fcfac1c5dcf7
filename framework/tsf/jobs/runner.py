"""The job runner of one server: claims stored jobs, queues their requests at background
priority on the models' own queues (:mod:`tsf.batching.background`), and stores the answers.

* It holds at most about twice what the live workers take in a batch, so a backlog of any size
  stays in the store, not in memory; a local submit wakes it, and it looks at the store every
  ``POLL`` seconds for jobs other replicas submitted.
* A job's request reaches the handler as the client sent it, its request id being the job's id.
* A run that ends with an answer ends the job: succeeded (2xx/3xx) or failed (the handler's
  error).  A run whose worker died or timed out is run again (``job_max_attempts`` runs in
  all).  A job whose model was unregistered fails, saying so.  A model scaled to zero workers
  keeps its jobs waiting.
* A cancelled job, or one another replica took over, is dropped like a request whose client
  left.  Stopping, the runner gives back the jobs no worker has begun, lets the others finish
  within the drain's time, and gives back what is left: given back, a job is queued again
  without counting an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import (ClientGone, ModelNotFound, ModelVersionNotFound, ServiceUnavailable,
                      TsfError, WorkerDied, WorkerTimeout)
from ..workers.messages import Answer, Request
from .callbacks import CallbackSender
from .metrics import JobMetrics
from .records import FAILED, SUCCEEDED, WORKFLOW, Claimed, JobRecord, StoredResult, \
    unpack_request
from .store import Finish, JobStore

log = logging.getLogger("tsf.jobs")

MIN_WINDOW, MAX_WINDOW, CLAIM_BATCH = 4, 2048, 64
POLL = 0.5               # s between looks at the store when it had nothing to run
NO_WORKERS_POLL = 0.5    # s between looks at a model scaled to zero workers
HOUSEKEEPING = 2.0       # s between refreshes of the store's figures (and sweeps)
SWEEP_EVERY = 5          # housekeeping rounds between sweeps
CALLBACK_GRACE = 120.0   # s after which a callback still pending is sent again


class RunningJob:
    """A claimed job this runner runs: its task, and the model requests it has queued."""

    __slots__ = ("record", "task", "requests", "lost")

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.task: asyncio.Task | None = None
        self.requests: list[Any] = []  # batching jobs (a workflow's job has one per node)
        self.lost = False  # cancelled or taken over: nothing may be stored

    @property
    def dispatched(self) -> bool:
        return any(job.dispatched for job in self.requests)

    def drop(self, reason: str) -> None:
        for job in self.requests:
            job.abandon(reason)


class JobRunner:
    """Runs one server's share of the stored jobs."""

    def __init__(self, store: JobStore, manager: Any, workflows: Any, owner: str,
                 metrics: JobMetrics, callbacks: CallbackSender, heartbeat: float | None,
                 ttl: float = 86400.0) -> None:
        self.store = store
        self.manager = manager
        self.workflows = workflows
        self.owner = owner
        self.metrics = metrics
        self.callbacks = callbacks
        self.heartbeat_interval = heartbeat  # None: the store needs no heartbeat (SQLite)
        self.running: dict[str, RunningJob] = {}
        self.stopping = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._started = time.time()
        self._starting: list[str] = []  # jobs sent to a worker, not yet marked running
        self._marking: asyncio.Task | None = None
        # a short job_ttl is swept every round, so jobs expire close to their time
        self._sweep_every = 1 if ttl <= 60 else SWEEP_EVERY

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._claim_loop()),
                       asyncio.ensure_future(self._housekeeping())]
        if self.heartbeat_interval:
            self._tasks.append(asyncio.ensure_future(self._heartbeats()))

    def wake(self) -> None:
        """A job was submitted here: look at the store now."""
        self._wake.set()

    def drop(self, job_id: str, reason: str) -> None:
        """Stop running ``job_id`` (cancelled, or taken over): its answer is not stored."""
        running = self.running.get(job_id)
        if running is not None:
            running.lost = True
            running.drop(reason)

    def window(self) -> int:
        """How many jobs to hold: about two batches for every live worker."""
        total = sum(mv.pool.live_count * mv.settings.batch_size
                    for mv in list(self.manager.registry))
        return max(MIN_WINDOW, min(MAX_WINDOW, 2 * total))

    def live_workers(self) -> int:
        return sum(mv.pool.live_count for mv in list(self.manager.registry))

    # --- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        failures = 0
        while not self.stopping:
            room = self.window() - len(self.running)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            self._wake.clear()
            try:
                claimed = await self.store.claim(self.owner, min(room, CLAIM_BATCH), time.time())
                failures = 0
            except Exception as exc:  # the store is unreachable: retry, never give up
                failures += 1
                log.error("claiming jobs from the %s store failed: %s", self.store.kind, exc)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** failures))
                continue
            for item in claimed:
                running = RunningJob(item.record)
                self.running[item.record.id] = running
                running.task = asyncio.ensure_future(self._run(running, item))
            if not claimed:
                try:
                    await asyncio.wait_for(self._wake.wait(), POLL)
                except asyncio.TimeoutError:
                    pass

    # --- running one job -------------------------------------------------------------------
    async def _run(self, running: RunningJob, item: Claimed) -> None:
        record = running.record
        try:
            outcome = await self._outcome(running, item)
            if outcome is None or running.lost:
                return
            await self._finish(running, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: storing its outcome failed; it runs again later", record.id)
        finally:
            self.running.pop(record.id, None)
            self._room.set()

    async def _outcome(self, running: RunningJob, item: Claimed) -> Finish | None:
        """How the run ended (None: given back, retried or dropped; nothing to store)."""
        record = running.record
        if record.error is not None and not item.payload:  # its stored request is gone
            return Finish(FAILED, error=record.error)
        try:
            request = unpack_request(item.payload)
            request.id = record.id
            answer = await self._execute(running, request)
        except ClientGone:
            if not running.lost:
                await self.store.release(record.id, self.owner)
            return None
        except (WorkerDied, WorkerTimeout) as exc:
            after = await self.store.retry(record.id, self.owner, exc.to_dict(), time.time())
            if after is not None and after.status == FAILED:
                self._ended(after)
            return None
        except ServiceUnavailable as exc:
            if self.stopping:
                await self.store.release(record.id, self.owner)
                return None
            if not self._registered(record):
                return Finish(FAILED, error=self._gone(record).to_dict())
            after = await self.store.retry(record.id, self.owner, exc.to_dict(), time.time())
            if after is not None and after.status == FAILED:
                self._ended(after)
            return None
        except (ModelNotFound, ModelVersionNotFound):
            return Finish(FAILED, error=self._gone(record).to_dict())
        except TsfError as exc:
            return Finish(FAILED, error=exc.to_dict())
        if answer.error or answer.status >= 400:
            try:
                answer.raise_for_error()
            except TsfError as exc:
                return Finish(FAILED, error=exc.to_dict())
        return Finish(SUCCEEDED, StoredResult(answer.status, answer.ctype, answer.body,
                                              answer.headers))

    async def _execute(self, running: RunningJob, request: Request) -> Answer:
        record = running.record
        if record.target == WORKFLOW:
            def submit(model: str, message: Request, span: Any) -> Any:
                job = self.manager.submit_background(model, None, message, record.model,
                                                     self._on_start(running))[1]
                running.requests.append(job)
                return job

            if record.model not in self.workflows.workflows:
                raise self._gone(record)
            if self.stopping or running.lost:
                raise ClientGone("the server is stopping; the job runs again later")
            return await self.workflows.predict(record.model, request, submit, None)
        while True:
            mv = self.manager.registry.get(record.model, record.version)
            if mv.pool.target > 0 or mv.pool.live_count > 0:
                break
            await asyncio.sleep(NO_WORKERS_POLL)  # scaled to zero: the job waits for workers
            if running.lost or self.stopping:
                raise ClientGone("the job was cancelled, or the server is stopping")
        if self.stopping or running.lost:  # stopping (or cancelled) before it was queued
            raise ClientGone("the server is stopping; the job runs again later")
        _, job = self.manager.submit_background(record.model, record.version, request,
                                                on_start=self._on_start(running))
        running.requests.append(job)
        return await job.future

    def _on_start(self, running: RunningJob) -> Any:
        """What a job's request calls when it is sent to a worker: the job is running."""
        def started() -> None:
            if running.record.status != "running":
                running.record.status = "running"
                self._starting.append(running.record.id)
                if self._marking is None or self._marking.done():
                    self._marking = asyncio.ensure_future(self._mark_running())

        return started

    async def _mark_running(self) -> None:
        """Write the jobs sent to workers as running (those sent meanwhile in one go)."""
        while self._starting:
            job_ids, self._starting = self._starting, []
            try:
                await self.store.mark_running(self.owner, job_ids, time.time())
            except Exception as exc:
                log.error("marking %d job(s) running in the %s store failed: %s",
                          len(job_ids), self.store.kind, exc)

    def _registered(self, record: JobRecord) -> bool:
        if record.target == WORKFLOW:
            return record.model in self.workflows.workflows
        try:
            self.manager.registry.get(record.model, record.version)
            return True
        except TsfError:
            return False

    @staticmethod
    def _gone(record: JobRecord) -> TsfError:
        what = f"workflow {record.model}" if record.target == WORKFLOW else \
            f"model {record.model}" + (f" version {record.version}" if record.version else "")
        return ModelNotFound(f"{what} is not registered any more: it was unregistered after "
                             "the job was submitted")

    async def _finish(self, running: RunningJob, outcome: Finish) -> None:
        record = await self.store.finish(running.record.id, self.owner, outcome, time.time())
        if record is None:  # cancelled or taken over meanwhile
            return
        self._ended(record)

    def _ended(self, record: JobRecord) -> None:
        """Count a job this runner ended, and send its callback."""
        self.metrics.finished.labels(record.model, record.status).inc()
        if record.finished is not None:
            self.metrics.duration.labels(record.model).observe(record.finished - record.created)
        if record.callback_url and record.callback_status == "pending":
            self.callbacks.send(record)

    # --- keeping jobs, figures, callbacks --------------------------------------------------
    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval or 1.0)
            ids = list(self.running)
            if not ids:
                continue
            try:
                lost = await self.store.heartbeat(self.owner, ids, time.time())
            except Exception as exc:
                log.error("job heartbeat to the %s store failed: %s", self.store.kind, exc)
                continue
            for job_id in lost:
                log.warning("job %s was cancelled or taken over by another replica; dropping "
                            "it here", job_id)
                self.drop(job_id, "the job was cancelled or taken over by another replica")

    async def _housekeeping(self) -> None:
        rounds = 0
        while True:
            now = time.time()
            try:
                self.metrics.stats = await self.store.stats(now, self.owner,
                                                            self.live_workers())
                if rounds % self._sweep_every == 0:
                    await self.store.sweep(now)
                    # callbacks a stopped server (or replica) still owed
                    before = self._started if rounds == 0 else now - CALLBACK_GRACE
                    for record in await self.store.pending_callbacks(before, 100):
                        self.callbacks.send(record)
            except Exception as exc:
                log.error("job store housekeeping (%s) failed: %s", self.store.kind, exc)
            rounds += 1
            await asyncio.sleep(HOUSEKEEPING)

    async def stop(self, grace: float) -> None:
        """Stop claiming; give back what no worker began; let the rest finish within
        ``grace`` seconds; give back what is left."""
        self.stopping = True
        self._wake.set()
        self._room.set()
        for task in self._tasks:
            task.cancel()
        for running in list(self.running.values()):
            if not running.dispatched:
                running.drop("the server is stopping; the job runs again later")
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(grace, 0.01))
        for running in list(self.running.values()):
            running.drop("the server is stopping; the job runs again later")
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        await self.callbacks.close()

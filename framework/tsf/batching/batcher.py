"""Per-model-version request queue and batch assembly.

* The queue is bounded (``job_queue_size``): a full queue refuses at once with 503.
* A batch holds up to ``batch_size`` jobs and waits at most ``max_batch_delay`` counted from the
  arrival of its *first* job, not from when a worker became free: a job that already waited
  behind a busy worker is sent as soon as a worker is idle.
* Once a job is queued, the dispatcher takes a worker, then assembles the batch, so a batch never
  waits for a worker while more jobs could have joined it.  An idle worker goes first; a busy
  one with fewer than ``worker_pipeline_depth`` batches in flight is taken too, and the batch
  waits in its socket until the worker has answered the one before it (see
  :mod:`tsf.workers.process`).  A batch for a busy worker is sent once full; if it is not full
  when a worker becomes idle, the ``max_batch_delay`` rule applies from then on.
* If a worker dies before it begins a batch it was sent, that batch's jobs go back to the front
  of the queue; only the batch it was computing fails.
* A job still queued after ``response_timeout`` (or the model's ``clientTimeoutInMills``, when
  shorter) fails with 503, so no request waits forever.
* With ``useJobTicket`` a job that no worker is free to take (an idle worker, or room in the
  batch a worker is waiting to fill) is refused at once with 503 instead of queueing.
* A job whose client went away (HTTP disconnect, gRPC cancel) leaves the queue at once, so the
  queue limit counts live requests only; if its batch waits behind another in a worker's
  socket, the worker skips it; if the worker is computing it, its answer is dropped.
* Stored jobs (``tsf.jobs``) run at background priority, in a lane of their own made when the
  first one arrives (:mod:`tsf.batching.background`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Callable, Protocol

from ..errors import BatchNotStarted, ClientGone, ServiceUnavailable, TsfError
from ..workers.messages import Answer, Batch, BatchResult
from ..workers.pool import WorkerPool
from .background import BackgroundJob, BackgroundLane
from .queue import BatchQueue, Job

log = logging.getLogger("tsf.batching")


class BatchObserver(Protocol):
    """What a batcher reports as it works (see :class:`tsf.serving.observer.VersionObserver`)."""

    def batch_done(self, batch: list[Job], result: BatchResult, started: float,
                   finished: float, worker_id: str) -> None:
        """A worker answered ``batch`` with ``result``; ``started`` (when the worker began it)
        and ``finished`` are ``time.monotonic()`` times."""

    def abandoned(self, stage: str) -> None:
        """A job's client went away while it was ``"queued"`` (dropped before any worker saw
        it) or ``"running"`` (its answer is dropped)."""


class Batcher:
    """Moves jobs from a queue to the workers of a pool, in batches."""

    def __init__(self, queue: BatchQueue, pool: WorkerPool, *, batch_size: int,
                 max_batch_delay_ms: float, response_timeout: float,
                 observer: BatchObserver | None = None, stage_stamps: bool = False,
                 client_timeout_ms: int = 0, job_ticket: bool = False) -> None:
        self.queue = queue
        self.pool = pool
        self.batch_size = batch_size
        self.max_delay = max_batch_delay_ms / 1000.0
        self.response_timeout = response_timeout
        self.observer = observer
        self.stage_stamps = stage_stamps  # ask workers for wall-clock stage times (tracing)
        self.client_timeout_ms = client_timeout_ms
        self.job_ticket = job_ticket
        self._holding = False  # an idle worker is acquired and waits for its batch to fill
        self._task: asyncio.Task | None = None
        self._in_flight: dict[int, list[Job]] = {}  # batches sent and not answered, by id
        self._all_answered: asyncio.Future | None = None  # stop() waits on it
        self._stop_error: TsfError | None = None  # set once stop() begins
        self.lane: BackgroundLane | None = None  # stored jobs' requests, once one arrives
        self.online_sent = float("-inf")  # time.monotonic() of the last online batch sent

    def start(self) -> None:
        self.pool.on_idle = self.queue.wake  # a batch filling for a busy worker may go now
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, error: TsfError, wait: float | None = None) -> None:
        """Fail queued jobs with ``error``; give batches in flight ``wait`` seconds (default:
        ``response_timeout``) to be answered, then fail their jobs with ``error`` too."""
        self._stop_error = error
        if self._task is not None:
            self._task.cancel()
        if self.lane is not None:
            self.lane.stop(error)
        for job in self.queue.drain():
            _fail(job, error)
        if self._in_flight:
            if self._all_answered is None:
                self._all_answered = asyncio.get_running_loop().create_future()
            timeout = self.response_timeout if wait is None else max(wait, 0.01)
            try:
                await asyncio.wait_for(asyncio.shield(self._all_answered), timeout)
            except asyncio.TimeoutError:
                pass
        for batch in list(self._in_flight.values()):
            for job in batch:
                _fail(job, error)
        self._in_flight.clear()

    def submit(self, job: Job) -> None:
        if self.job_ticket and not self._room_now():
            raise ServiceUnavailable("no worker is free to take this request and the model uses "
                                     "useJobTicket (refuse rather than queue); retry later")
        self.queue.put(job)
        self._arm_expiry(job, 0.0)
        job.future.add_done_callback(functools.partial(self._settled, job))

    def in_flight(self) -> list[list[Job]]:
        """The batches sent to workers and not answered yet."""
        return list(self._in_flight.values())

    def submit_background(self, job: BackgroundJob, share: float) -> None:
        """Queue a stored job's request at background priority (``share``: ``job_share``)."""
        if self._stop_error is not None:
            raise self._stop_error
        if self.lane is None:
            self.lane = BackgroundLane(self, share)
        self.lane.share = share
        self.lane.submit(job)

    def _arm_expiry(self, job: Job, waited: float) -> None:
        """Fail ``job`` if it is still queued at its timeout (``waited`` s of it already gone)."""
        loop = asyncio.get_running_loop()
        client = self.client_timeout_ms / 1000.0
        if client and client < self.response_timeout:
            why = f"{self.client_timeout_ms} ms (clientTimeoutInMills); the request was dropped"
            job.expiry = loop.call_later(max(0.0, client - waited), _expire, job, why)
        else:
            job.expiry = loop.call_later(max(0.0, self.response_timeout - waited), _expire, job,
                                         f"{self.response_timeout:g} s (response_timeout)")

    def _room_now(self) -> bool:
        """Whether a worker could take one more job without it waiting for a busy one."""
        room = self.pool.idle_count * self.batch_size + (self.batch_size if self._holding else 0)
        return len(self.queue) < room

    def _settled(self, job: Job, future: asyncio.Future) -> None:
        """Drop a job whose client went away (cancelled, or failed with ClientGone)."""
        if not future.cancelled() and not isinstance(future.exception(), ClientGone):
            return
        if job.expiry is not None:
            job.expiry.cancel()
        queued = not job.dispatched
        if queued:
            self.queue.discard(job)
        else:  # sent: the worker skips it if it has not begun it
            queued = job.cancel_at_worker()
        if self.observer is not None:
            self.observer.abandoned("queued" if queued else "running")

    async def _run(self) -> None:
        pool, queue = self.pool, self.queue
        while True:
            await queue.first_job()  # a worker is held only while a batch fills
            worker = await pool.acquire()
            batch: list[Job] = []
            try:
                worker = await self._while_busy(worker)
                self._holding = not worker.in_flight
                batch = await queue.fill(self.batch_size, self.max_delay)
                worker = pool.swap_for_idle(worker)
                while not worker.alive:
                    pool.release(worker)
                    worker = await pool.acquire()
            except asyncio.CancelledError:  # stopping: the jobs in hand get its error
                pool.release(worker)
                for job in batch:
                    _fail(job, self._stop_error or ServiceUnavailable("the model is stopping"))
                raise
            finally:
                self._holding = False
            batch = [job for job in batch if not job.future.done()]
            try:
                if batch:
                    self.send_batch(worker, batch)
                    self.online_sent = batch[0].dispatched  # jobs yield to online traffic
            finally:
                pool.release(worker)

    def send_batch(self, worker: Any, batch: list[Job]) -> None:
        """Send ``batch`` to ``worker``, which the caller holds; a batch that cannot be sent
        fails alone."""
        try:
            self._send(worker, batch)
        except Exception as exc:
            log.exception("sending a batch to worker %s failed", worker.id)
            self._in_flight.pop(id(batch), None)
            for job in batch:
                _fail(job, exc if isinstance(exc, TsfError) else TsfError(
                    f"the batch could not be sent to the worker ({type(exc).__name__})"))

    async def _while_busy(self, worker: Any) -> Any:
        """With a busy worker in hand, let the batch grow until it is full or a worker is idle:
        it could not begin earlier anyway, and a batch sent half full at its deadline would
        keep the requests that come next from joining it.  The worker to fill the batch for."""
        queue, pool = self.queue, self.pool
        while worker.in_flight and worker.alive and len(queue) < self.batch_size:
            worker = pool.swap_for_idle(worker)
            if not worker.in_flight:
                break
            await queue.changed()
        return worker

    def _send(self, worker: Any, batch: list[Job]) -> None:
        now = time.monotonic()
        waits = worker.in_flight > 0  # behind another batch: it may still expire meanwhile
        for job in batch:
            if job.expiry is not None and not waits:
                job.expiry.cancel()
            job.dispatched = now
        key = id(batch)
        self._in_flight[key] = batch
        number = worker.send_batch(Batch([job.request for job in batch], self.stage_stamps),
                                   self.response_timeout,
                                   functools.partial(self._answered, worker, batch, key),
                                   _partials_to(batch))
        if waits and key in self._in_flight:  # cancellable until the worker begins it
            for index, job in enumerate(batch):
                job.sent_to = (worker, number, index)

    def _answered(self, worker: Any, batch: list[Job], key: int, result: BatchResult | None,
                  error: TsfError | None, started: float) -> None:
        """A worker answered ``batch`` (or failed it): settle its jobs."""
        self._in_flight.pop(key, None)
        for job in batch:
            if job.sent_to is not None:  # it waited behind another batch
                job.sent_to = None  # lets go of the worker
                job.expiry.cancel()  # type: ignore[union-attr]
        try:
            if isinstance(error, BatchNotStarted) and self._stop_error is None:
                self._requeue(batch)
            elif error is not None or result is None:
                for job in batch:
                    _fail(job, self._stop_error if isinstance(error, BatchNotStarted) else
                          error or ServiceUnavailable("the worker sent no answer"))
            else:
                for job, answer in zip(batch, result.answers):
                    if not job.future.done():
                        job.future.set_result(answer)
                    elif job.expired and not (answer.error and answer.status == ClientGone.status):
                        log.warning("request %s timed out waiting behind a batch and was "
                                    "answered 503, but its worker had begun its batch before "
                                    "the cancel reached it, and ran it", job.request.id)
                if self.observer is not None:
                    self.observer.batch_done(batch, result, started, time.monotonic(),
                                             worker.id)
        finally:
            if not self._in_flight and self._all_answered is not None \
                    and not self._all_answered.done():
                self._all_answered.set_result(None)
            self.pool.batch_finished(worker, error is None)
            self.queue.wake()  # a batch filling for a busy worker may go now

    def _requeue(self, batch: list[Job]) -> None:
        """Queue again the jobs of a batch no worker began (its worker died first)."""
        now = time.monotonic()
        live = [job for job in batch if not job.future.done()]
        if self.lane is not None:
            live = self.lane.take_back(live)
        for job in live:
            job.dispatched = 0.0
            job.sent_to = None
            if job.expiry is not None:
                job.expiry.cancel()
            self._arm_expiry(job, now - job.arrival)
        self.queue.requeue(live)
        log.warning("%d request(s) sent to a worker that died before it began them were "
                    "queued again", len(live))


def _partials_to(batch: list[Job]) -> Callable[[Answer], None]:
    """Hands each intermediate answer to the job it belongs to, while that job still waits."""

    def deliver(answer: Answer) -> None:
        index = -1 if answer.index is None else answer.index
        if not 0 <= index < len(batch):
            return
        job = batch[index]
        if job.on_partial is not None and not job.future.done():
            try:
                job.on_partial(answer)
            except Exception:  # one client's stream must not break the worker's batch
                log.exception("could not pass an intermediate answer to its request")

    return deliver


def _fail(job: Job, error: TsfError) -> None:
    if job.expiry is not None:
        job.expiry.cancel()
    if not job.future.done():
        job.future.set_exception(error)


def _expire(job: Job, within: str) -> None:
    if job.future.done():
        return
    if job.dispatched:  # sent behind a busy worker's batch: the worker is asked to skip it
        if not job.cancel_at_worker():
            return
        job.expired = within
    job.future.set_exception(ServiceUnavailable(
        f"no worker became free for this request within {within}; the model may be "
        "overloaded or restarting"))

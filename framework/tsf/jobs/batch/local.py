"""``tsf batch`` on this machine: the archive registered with a model manager of its own, so its
handler runs in worker processes with the server's batching, pipelining, timeouts and worker
restarts; records are fed as workers take them, at most a few batches ahead."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ...errors import TsfError, WorkerDied, WorkerTimeout
from ...workers.messages import Answer, Part, Request
from .inputs import Record
from .outputs import Result

MODEL = "batch"
RETRIED = (WorkerDied, WorkerTimeout)  # the worker died or hung: the batch is sent once more


@dataclass
class EngineOptions:
    """How the handler runs: workers, batching, and the time one batch may take."""

    archive: Path
    workers: int = 1
    batch_size: int | None = None  # None: the archive's model-config, else 1
    max_batch_delay: int = 50
    timeout: int = 120


class Sink:
    """Where records end: results, failures, and the progress line."""

    def __init__(self, on_result: Callable[[Result], None],
                 on_failure: Callable[[str, dict], None],
                 on_ready: Callable[[], None] = lambda: None) -> None:
        self.result = on_result
        self.failure = on_failure
        self.ready = on_ready  # the handler is loaded: records start to run


def answer_outcome(record_id: str, answer: Answer, sink: Sink) -> None:
    """Hand one answer to the sink: a result, or the handler's error as a failure."""
    if answer.error or answer.status >= 400:
        try:
            answer.raise_for_error()
        except TsfError as exc:
            sink.failure(record_id, exc.to_dict())
            return
    sink.result(Result(record_id, answer.status, answer.ctype, answer.body))


def request_of(record: Record, number: int) -> Request:
    return Request(f"{number}", [Part("body", record.body, record.ctype)],
                   {"Content-Type": record.ctype, "X-Tsf-Record-Id": record.id[:512]})


async def run_local(options: EngineOptions, records: Iterable[Record], sink: Sink,
                    stop: asyncio.Event, stop_now: asyncio.Event) -> None:
    """Run every record; ``stop`` ends the reading (what is in flight finishes), ``stop_now``
    drops what is in flight too."""
    from ...config.settings import ServerConfig
    from ...plugins import create_manager
    from ...serving.manager import ModelManager
    from ...serving.manager_types import RegisterRequest
    from ...telemetry.metrics import ServerMetrics

    workspace = Path(tempfile.mkdtemp(prefix="tsf-batch-"))
    archive = options.archive.resolve()
    config = ServerConfig(model_store=str(archive.parent), workspace=str(workspace),
                          job_store="off", job_queue_size=1 << 20,
                          default_response_timeout=options.timeout, log_level="WARNING",
                          max_workers_per_model=0)
    manager = ModelManager(config, create_manager(), ServerMetrics())
    inflight: dict[asyncio.Future, tuple[Record, Any, int]] = {}
    try:
        await manager.register(RegisterRequest(
            archive.name, model_name=MODEL, batch_size=options.batch_size,
            max_batch_delay=options.max_batch_delay, initial_workers=options.workers,
            response_timeout=options.timeout, synchronous=True))
        mv = manager.registry.get(MODEL)
        limit = max(8, 4 * options.workers * mv.settings.batch_size)
        sink.ready()
        number = 0

        def submit(record: Record, tries: int) -> None:
            nonlocal number
            number += 1
            _, job = manager.submit(MODEL, None, request_of(record, number))
            inflight[job.future] = (record, job, tries)

        async def settle() -> None:
            waiter = asyncio.ensure_future(stop_now.wait())
            done, _ = await asyncio.wait([*inflight, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for future in done:
                if future is waiter:
                    continue
                record, _, tries = inflight.pop(future)
                try:
                    answer_outcome(record.id, future.result(), sink)
                except RETRIED as exc:
                    if tries == 0 and not stop.is_set():
                        submit(record, 1)
                    else:
                        sink.failure(record.id, exc.to_dict())
                except TsfError as exc:
                    sink.failure(record.id, exc.to_dict())

        for record in records:
            if stop.is_set():
                break
            while len(inflight) >= limit and not stop_now.is_set():
                await settle()
            submit(record, 0)
        while inflight and not stop_now.is_set():
            await settle()
    finally:
        for record, job, _ in inflight.values():
            job.abandon("tsf batch was interrupted")
        await manager.shutdown(wait=0)
        shutil.rmtree(workspace, ignore_errors=True)

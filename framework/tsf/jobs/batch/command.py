"""``tsf batch MODEL_OR_ARCHIVE INPUT --output OUT``: an archive's own handler over a data set, in
worker processes with batching (:mod:`~tsf.jobs.batch.local`) or over Ray Data
(:mod:`~tsf.jobs.batch.ray_engine`), with a progress line, a summary, a failures file and
``--resume``.

Exit status: 0 when every record succeeded, 1 when some failed (see the failures file), 2 when
the run could not start (a bad archive, input or option), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any, Iterator

from ...errors import BadRequest
from .inputs import InputSpec, Record, count_records, detect_format, read_records
from .outputs import Result, open_output
from .progress import Progress

ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".zip")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("batch", help="run a model archive's handler over a data set (offline "
                       "batch inference), locally or on a Ray cluster")
    p.add_argument("model", metavar="MODEL_OR_ARCHIVE",
                   help="an archive (.mar, .tar.gz, .zip or an unpacked folder), or a model "
                        "name in --model-store")
    p.add_argument("input", metavar="INPUT",
                   help="a folder of files, a JSON Lines, CSV or Parquet file")
    p.add_argument("--output", "-o", required=True,
                   help="results: a .jsonl file, or a .parquet folder of parts")
    p.add_argument("--model-store", help="where MODEL is looked up when it is a name")
    p.add_argument("--input-format", choices=("folder", "jsonl", "csv", "parquet"))
    p.add_argument("--output-format", choices=("jsonl", "parquet"))
    p.add_argument("--id-field", default="id",
                   help="the field (column) that names each record (default: id; else its "
                        "line or row number)")
    p.add_argument("--input-field", help="send this field's value as the body instead of the "
                   "whole record")
    p.add_argument("--content-type", help="the content type of each body (default: by file "
                   "name for a folder, JSON for records)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (Ray: actors)")
    p.add_argument("--batch-size", type=int, help="records per batch (default: the archive's "
                   "batchSize, else 1)")
    p.add_argument("--max-batch-delay", type=int, default=50,
                   help="ms a batch waits to fill (default 50)")
    p.add_argument("--timeout", type=int, default=120, help="s one batch may take")
    p.add_argument("--resume", action="store_true",
                   help="skip the records an earlier, interrupted run of this output finished")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run over Ray Data: a local Ray (no ADDRESS) or the cluster at "
                        "ADDRESS (ray://host:10001, auto)")
    p.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray (default: all)")


def archive_path(model: str, model_store: str | None) -> Path:
    path = Path(model)
    if path.exists():
        return path
    if model_store:
        store = Path(model_store)
        for candidate in [store / model, *(store / f"{model}{s}" for s in ARCHIVE_SUFFIXES)]:
            if candidate.exists():
                return candidate
    raise BadRequest(f"no archive {model!r}" + (f" in {model_store}" if model_store else "")
                     + ": give an archive's path, or a name with --model-store")


class Run:
    """One ``tsf batch`` run: what is done, where results and failures go, the progress."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.workers < 1 or (args.batch_size is not None and args.batch_size < 1):
            raise BadRequest("--workers and --batch-size must be at least 1")
        self.archive = archive_path(args.model, args.model_store)
        path = Path(args.input)
        self.spec = InputSpec(path, detect_format(path, args.input_format), args.id_field,
                              args.input_field, args.content_type)
        self.output, self.failures, self.failures_path = open_output(
            Path(args.output), args.output_format, args.resume, args.overwrite)
        self.done = self.output.done_ids() | set(self.failures.rows)
        count = count_records(self.spec)
        self.progress = Progress(total=None if count is None else max(0, count - len(self.done)),
                                 failed_before=len(self.failures.rows))
        self._seen: set[str] = set()

    def records(self) -> Iterator[Record]:
        """The records still to run; done ones are skipped, unreadable ones reported."""
        for record in read_records(self.spec):
            if record.id in self.done:
                self.progress.skipped += 1
                continue
            if record.id in self._seen:
                self.failure(record.id, BadRequest(f"duplicate id {record.id!r}: ids must "
                                                   "be unique (--id-field)").to_dict())
                continue
            self._seen.add(record.id)
            if record.error is not None:
                self.failure(record.id, BadRequest(record.error).to_dict())
                continue
            yield record

    def ready(self) -> None:
        """The handler is loaded: the rate and the ETA count from now."""
        self.progress.loaded()

    def result(self, result: Result) -> None:
        self.output.write([result])
        self.progress.succeeded += 1
        self.progress.update()

    def failure(self, record_id: str, error: dict) -> None:
        self.failures.write([{"id": record_id, "error": error}])
        self.progress.failed += 1
        self.progress.update()

    def close(self) -> None:
        self.output.close()
        self.failures.close()


def run(args: argparse.Namespace) -> int:
    from ...telemetry.logs import configure_logging

    configure_logging("WARNING", "text")
    batch = Run(args)
    interrupted = False
    try:
        if args.ray:
            from .ray_engine import run_ray

            interrupted = run_ray(args, batch)
        else:
            interrupted = asyncio.run(_run_local(args, batch))
    finally:
        batch.close()
        batch.progress.finish()
    print(batch.progress.summary(str(args.output), str(batch.failures_path), interrupted))
    if interrupted:
        return 130
    return 1 if batch.progress.failed or batch.progress.failed_before else 0


async def _run_local(args: argparse.Namespace, batch: Run) -> bool:
    from .local import EngineOptions, Sink, run_local

    stop, stop_now = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            stop_now.set()
            return
        stop.set()
        print("\nstopping: finishing the records in flight (again to stop at once)",
              file=sys.stderr)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    options = EngineOptions(batch.archive, args.workers, args.batch_size, args.max_batch_delay,
                            args.timeout)
    await run_local(options, batch.records(), Sink(batch.result, batch.failure, batch.ready),
                    stop, stop_now)
    return stop.is_set()

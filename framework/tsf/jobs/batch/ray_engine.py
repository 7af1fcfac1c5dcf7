"""``tsf batch --ray [ADDRESS]``: the archive's handler over Ray Data, ``map_batches`` with a pool
of actors (``--workers``), one handler loaded in each.

Each actor receives the archive's bytes (so the cluster's nodes need tsf-framework, not the
file), unpacks it in a folder of its own and loads the handler with the worker's own code
(:mod:`tsf.runtime`): the same decoding, stage hooks, one-bad-request isolation and encoding as
a worker process.  The records are read here (the driver), the results stream back here and are
written as they arrive, so ``--resume`` and the failures file work as they do locally (the
records to run are held in the driver's memory: for data sets larger than it, split the
input).  Without
ADDRESS a Ray is started in this process, on 127.0.0.1 only, and stopped at the end.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ...workers.messages import Answer, Batch, Part, Request
from .local import Sink, answer_outcome

DEFAULT_BATCH = 8


def archive_bytes(path: Path) -> tuple[bytes, str]:
    """The archive as bytes and the suffix it is opened by (a folder is packed as .tar.gz)."""
    if path.is_dir():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for item in sorted(path.rglob("*")):
                tar.add(item, arcname=item.relative_to(path).as_posix(), recursive=False)
        return buffer.getvalue(), ".tar.gz"
    name = path.name.lower()
    suffix = ".tar.gz" if name.endswith(".tar.gz") else path.suffix
    return path.read_bytes(), suffix


class HandlerActor:
    """One handler in a Ray actor; each call runs one batch of records through it."""

    def __init__(self, archive: Any, suffix: str, batch_size: int) -> None:
        from ...archives.reader import Limits, open_archive
        from ...runtime.batch_runner import BatchRunner
        from ...runtime.main import load

        if not isinstance(archive, bytes):  # an ObjectRef
            import ray

            archive = ray.get(archive)
        self.folder = Path(tempfile.mkdtemp(prefix="tsf-ray-"))
        path = self.folder / f"archive{suffix}"
        path.write_bytes(archive)
        opened = open_archive(path, self.folder / "model", Limits())
        spec = {"model_name": opened.model_name or "model",
                "model_version": opened.model_version, "model_dir": str(opened.model_dir),
                "manifest": opened.manifest, "model_config": opened.model_config,
                "handler": opened.handler, "batch_size": batch_size,
                "worker_id": f"ray-{os.getpid()}", "worker_index": 0}
        pm, context = load(spec)
        self.runner = BatchRunner(pm, context)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        ids = [str(i) for i in batch["id"]]
        requests = [Request(str(n), [Part("body", bytes(body), str(ctype))],
                            {"Content-Type": str(ctype), "X-Tsf-Record-Id": record_id[:512]})
                    for n, (record_id, body, ctype) in enumerate(zip(ids, batch["body"],
                                                                     batch["ctype"]))]
        answers = self.runner.run(Batch(requests)).answers
        return {"id": np.array(ids, dtype=object),
                "status": np.array([a.status for a in answers], dtype=np.int32),
                "ctype": np.array([a.ctype for a in answers], dtype=object),
                "body": np.array([a.body for a in answers], dtype=object),
                "error": np.array([a.error for a in answers], dtype=bool)}

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)


def _batch_size(args: Any, archive: Path) -> int:
    """``--batch-size``, else the archive's batchSize, else 8."""
    if args.batch_size:
        return args.batch_size
    from ...archives.reader import Limits, open_archive

    folder = Path(tempfile.mkdtemp(prefix="tsf-ray-"))
    try:
        size = open_archive(archive, folder, Limits()).model_config.get("batchSize")
        return int(size) if size else DEFAULT_BATCH
    except (TypeError, ValueError):
        return DEFAULT_BATCH
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_ray(args: Any, run: Any) -> bool:
    """Run every record of ``run`` over Ray; True if interrupted."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = args.ray == "local"
    if local:  # Ray binds the machine's first address unless told to keep to loopback
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    batch_size = _batch_size(args, run.archive)
    data, suffix = archive_bytes(run.archive)
    items = [{"id": r.id, "body": r.body, "ctype": r.ctype} for r in run.records()]
    if not items:  # nothing left to run (an earlier run finished it)
        return False
    if local:
        ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=args.ray, log_to_driver=False, configure_logging=False)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        dataset = ray.data.from_items(items).map_batches(
            HandlerActor, fn_constructor_kwargs={"archive": ray.put(data), "suffix": suffix,
                                                 "batch_size": batch_size},
            compute=ray.data.ActorPoolStrategy(size=args.workers), batch_size=batch_size,
            batch_format="numpy", num_cpus=1)
        sink = Sink(run.result, run.failure)
        first = True
        for rows in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            if first:  # the actors have loaded the handler
                run.ready()
                first = False
            for record_id, status, ctype, body, error in zip(
                    rows["id"], rows["status"], rows["ctype"], rows["body"], rows["error"]):
                answer_outcome(str(record_id), Answer(int(status), str(ctype), bytes(body),
                                                      error=bool(error)), sink)
        return False
    except KeyboardInterrupt:
        return True
    finally:
        ray.shutdown()

"""Profiling a worker's next batches: torch's profiler and Python's, per stage.

An order (``PUT /models/{m}/profile?batches=N`` sends a PROFILE frame, see
:class:`tsf.workers.messages.ProfileOrder`) arms the profiler: the next N batches run under
``torch.profiler`` (CPU, and CUDA where the worker has a GPU; each stage a ``preprocess`` /
``inference`` / ``postprocess`` range) and ``cProfile``.  After the N-th batch the worker writes,
into the order's folder, ``{worker}.trace.json`` (a Chrome trace: Perfetto and
chrome://tracing open it), ``{worker}.stages.prof`` (``pstats``: ``snakeviz`` opens it) and
``{worker}.summary.json`` (batches, requests, seconds per stage, the seconds the prepare
threads spent decoding requests ahead, torch's busiest operators),
each written under a temporary name and renamed, so a file that exists is complete.

The trace and the ``.prof`` cover the worker's main thread, which runs the stages; what the
prepare threads do (:mod:`tsf.runtime.read_ahead`) shows in the summary's
``prepare_seconds``.

TorchServe's switch is honoured too: ``enable_pytorch_profiler: true`` in model-config.yaml
(or ``ENABLE_TORCH_PROFILER=true`` in the worker's environment) records the first
``profiler_batches`` (default 10) batches after the model loads, into the version's profile
folder the front end passes in the worker's spec.
"""

from __future__ import annotations

import contextlib
import cProfile
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..workers.messages import Batch, BatchResult, ProfileOrder

log = logging.getLogger("tsf.worker")

DEFAULT_BATCHES = 10
TOP_OPERATORS = 20


def startup_order(spec: dict) -> ProfileOrder | None:
    """The order TorchServe's switch gives, if it is on and the front end named a folder."""
    config = spec.get("model_config") or {}
    wanted = str(config.get("enable_pytorch_profiler", "")).lower() == "true" or \
        os.environ.get("ENABLE_TORCH_PROFILER", "").lower() == "true"
    folder = spec.get("profile_dir")
    if not wanted or not folder:
        return None
    batches = int(config.get("profiler_batches") or DEFAULT_BATCHES)
    return ProfileOrder(batches, str(Path(folder) / time.strftime("startup-%Y%m%dT%H%M%S")))


class BatchProfiler:
    """Runs batches through ``runner``, recording them while an order is being carried out."""

    def __init__(self, runner: Any, worker_id: str) -> None:
        self.runner = runner
        self.worker_id = worker_id
        self.order: ProfileOrder | None = None
        self.done = 0
        self.requests = 0
        self.stages: dict[str, float] = {}
        self.prepared_before = 0.0
        self.torch_profile: Any = None
        self.python_profile: cProfile.Profile | None = None

    def arm(self, orders: list[ProfileOrder]) -> None:
        """Take the latest order (one under way is finished first and written)."""
        if not orders:
            return
        if self.order is not None:
            self._finish()
        self.order = orders[-1]
        self.done, self.requests, self.stages = 0, 0, {}
        preparer = getattr(self.runner, "preparer", None)
        self.prepared_before = preparer.busy if preparer is not None else 0.0
        self.python_profile = cProfile.Profile()
        try:
            import torch

            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.torch_profile = torch.profiler.profile(activities=activities,
                                                        record_shapes=True)
            self.torch_profile.__enter__()
            self.runner.annotate = torch.profiler.record_function
        except ImportError:  # a handler without torch: Python's profile alone
            self.torch_profile = None
        log.info("profiling the next %d batches into %s", self.order.batches,
                 self.order.directory)

    def run(self, batch: Batch, skip: set[int]) -> BatchResult:
        if self.order is None:
            return self.runner.run(batch, skip)
        assert self.python_profile is not None
        self.python_profile.enable()
        try:
            result = self.runner.run(batch, skip)
        finally:
            self.python_profile.disable()
        self.done += 1
        self.requests += len(batch.requests)
        for stage, seconds in result.timings.items():
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds
        if self.done >= self.order.batches:
            self._finish()
        return result

    def _finish(self) -> None:
        order, self.order = self.order, None
        self.runner.annotate = None
        assert order is not None and self.python_profile is not None
        folder = Path(order.directory)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            prefix = folder / self.worker_id
            summary: dict[str, Any] = {"worker": self.worker_id, "batches": self.done,
                                       "requests": self.requests,
                                       "stage_seconds": self.stages}
            preparer = getattr(self.runner, "preparer", None)
            if preparer is not None:
                summary["prepare_seconds"] = preparer.busy - self.prepared_before
                summary["prepare_threads"] = preparer.threads
            if self.torch_profile is not None:
                self.torch_profile.__exit__(None, None, None)
                with _renamed(Path(f"{prefix}.trace.json")) as path:
                    self.torch_profile.export_chrome_trace(str(path))
                summary["operators"] = self.torch_profile.key_averages().table(
                    sort_by="self_cpu_time_total", row_limit=TOP_OPERATORS)
            with _renamed(Path(f"{prefix}.stages.prof")) as path:
                self.python_profile.dump_stats(str(path))
            with _renamed(Path(f"{prefix}.summary.json")) as path:
                path.write_text(json.dumps(summary, indent=1))
            log.info("profile of %d batches written to %s", self.done, folder)
        except Exception:  # a profile that cannot be written must not stop the worker
            log.exception("could not write the profile into %s", folder)
        finally:
            self.torch_profile, self.python_profile = None, None


@contextlib.contextmanager
def _renamed(final: Path):
    partial = final.with_name(f".{final.name}.partial")
    try:
        yield partial
        partial.replace(final)
    finally:
        if partial.exists():
            partial.unlink()

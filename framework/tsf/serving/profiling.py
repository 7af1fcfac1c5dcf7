"""Profiles of a model version's workers, seen from the front end.

``PUT /models/{m}[/{v}]/profile?batches=N`` sends each live worker of the version a profile
order (:class:`tsf.workers.messages.ProfileOrder`): record the next N batches.  Each run gets
a folder ``{workspace}/profiles/{model}/{version}/{run}``, into which every worker writes its
Chrome trace, its ``.prof`` and a summary once its N batches are done (see
:mod:`tsf.runtime.profiler`).  ``GET /models/{m}/profile`` lists the runs, newest first, with
their files and whether every worker has written its own; ``GET
/models/{m}/profile/{run}/{file}`` downloads one.  Names are checked against a strict pattern
and must exist in the folder: nothing outside it can be read.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..errors import BadRequest, ResourceNotFound, ServiceUnavailable
from ..workers.messages import ProfileOrder
from ..workers.process import WorkerProcess
from .manager_types import ManagerResult
from .registry import ModelVersion

MAX_BATCHES = 10_000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SUFFIXES = {".trace.json": "application/json", ".summary.json": "application/json",
            ".prof": "application/octet-stream"}


class Profiles:
    """Starts profile runs and finds their files, under ``{root}/{model}/{version}``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runs = 0

    def folder(self, name: str, version: str) -> Path:
        return self.root / name / version

    def start(self, mv: ModelVersion, batches: int) -> ManagerResult:
        if not 1 <= batches <= MAX_BATCHES:
            raise BadRequest(f"batches must be between 1 and {MAX_BATCHES}")
        if mv.pool.worker_class is not WorkerProcess:
            raise BadRequest(f"model {mv.name} is served by a generation engine, which takes "
                             "requests continuously, not in batches: profile it with the "
                             "engine's own tools (its step metrics are on /metrics)")
        workers = [w for w in mv.pool.workers.values() if w.alive]
        if not workers:
            raise ServiceUnavailable(f"model {mv.name} version {mv.version} has no live "
                                     "worker to profile; scale it up first")
        self._runs += 1
        run = time.strftime("%Y%m%dT%H%M%S") + f"-{self._runs}"
        directory = self.folder(mv.name, mv.version) / run
        directory.mkdir(parents=True, exist_ok=True)
        order = ProfileOrder(batches, str(directory))
        sent = [w.id for w in workers if w.profile(order)]
        (directory / ".workers").write_text("\n".join(sent))
        return ManagerResult(202, f"profiling the next {batches} batches of each of "
                             f"{len(sent)} workers of model {mv.name} version {mv.version}; "
                             f"GET /models/{mv.name}/profile for the files (run {run})")

    def runs(self, mv: ModelVersion, base_url: str) -> dict:
        """The version's runs, newest first: files (with their URLs) and completeness."""
        folder = self.folder(mv.name, mv.version)
        runs = []
        if folder.is_dir():
            for run in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
                expected = [w for w in _read(run / ".workers").split() if w]
                files = sorted(p.name for p in run.iterdir() if _servable(p.name))
                finished = {f.split(".")[0] for f in files if f.endswith(".summary.json")}
                runs.append({"run": run.name, "complete": bool(expected) and
                             set(expected) <= finished or (not expected and bool(finished)),
                             "workers": expected or sorted(finished), "files": {
                                 f: f"{base_url}/{run.name}/{f}" for f in files}})
        return {"modelName": mv.name, "modelVersion": mv.version, "runs": runs}

    def file(self, mv: ModelVersion, run: str, name: str) -> tuple[Path, str]:
        """The path and content type of one profile file, if it exists."""
        if not NAME.fullmatch(run) or not NAME.fullmatch(name) or not _servable(name):
            raise BadRequest("not a profile file name")
        path = self.folder(mv.name, mv.version) / run / name
        if not path.is_file():
            raise ResourceNotFound(f"no profile file {run}/{name} for model {mv.name} version "
                           f"{mv.version} (not written yet, or never)")
        ctype = next(c for suffix, c in SUFFIXES.items() if name.endswith(suffix))
        return path, ctype


def _servable(name: str) -> bool:
    return not name.startswith(".") and any(name.endswith(s) for s in SUFFIXES)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""

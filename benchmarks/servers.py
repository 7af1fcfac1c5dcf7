"""The systems under test, started on 127.0.0.1 and stopped by PID: tsf, TorchServe 0.12,
LitServe and the bare-Tornado floor.

Each names its front-end processes (``front_pids``): the ones that parse HTTP and queue
requests, as opposed to the workers that run the model.  Their CPU time per request is the
front end's cost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from tsf.testing import ServerProcess, free_port
from workloads import Workload

HERE = Path(__file__).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds the processes have used so far (``/proc/<pid>/stat``)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces
        total += int(fields[11]) + int(fields[12])    # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def idle_load(pids: list[int], window: float = 1.0) -> float:
    """The cores the processes use with no load at all (LitServe's loops poll: about 0.2)."""
    before = cpu_seconds(pids)
    time.sleep(window)
    return (cpu_seconds(pids) - before) / window


def wait_idle(pids: list[int], timeout: float = 60.0, window: float = 0.25,
              busy: float = 0.1, idle: float = 0.0) -> float:
    """Wait until the processes use less than ``busy`` of a core over ``window`` seconds
    beyond ``idle`` (what they use unloaded, :func:`idle_load`): a server may still answer the
    requests a finished run left queued.  Return the seconds waited, at most ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pids)
        time.sleep(window)
        if cpu_seconds(pids) - before < (idle + busy) * window:
            break
    return time.monotonic() - started


def memory_mb(pids: list[int]) -> float:
    """Resident memory of the processes: the RSS of one, the PSS sum of several (forked
    processes share pages, which a sum of RSS would count once per process)."""
    total = 0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            total += process.memory_info().rss if len(pids) == 1 else \
                process.memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _start(cmd: list[str], health_url: str, log_path: Path, what: str, env: dict | None = None,
           cwd: Path | None = None, timeout: float = 180) -> subprocess.Popen:
    """Start ``cmd`` in its own session; return once ``health_url`` answers 200."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(health_url, timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"{what} did not start; see {log_path}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


class Tsf:
    """``tsf serve`` from this checkout; its front end is the one server process.

    ``tsf-asyncio`` in ``--systems`` is the same server on asyncio's own loop, to measure
    what uvloop changes in the same rounds; ``tsf-1thread`` runs its workers with one torch
    thread (``number_of_threads_per_worker=1``) instead of cores / workers; ``tsf-2workers``
    serves each model with two workers (of one thread each, cores / workers)."""

    def __init__(self, store: Path, event_loop: str = "auto", name: str = "tsf",
                 config: dict | None = None, workers: int = 1) -> None:
        self.name = name
        self.workers = workers
        started = time.perf_counter()
        # The stage-timer contrib example wraps every stage of every model; a production
        # install would not carry it, so the benchmark leaves it out.
        self.server = ServerProcess(model_store=store,
                                    config={"log_level": "WARNING", "event_loop": event_loop,
                                            **(config or {})},
                                    env={"TSF_DISABLE_PLUGINS": "stage_timer"})
        self.ready = time.perf_counter() - started
        self.inference = self.server.inference

    def supports(self, workload: Workload) -> bool:
        return True

    def register(self, workload: Workload, name: str, batch_size: int, delay_ms: int) -> None:
        r = self.server.register(f"{workload.name}.mar", model_name=name, batch_size=batch_size,
                                 max_batch_delay=delay_ms, initial_workers=self.workers)
        r.raise_for_status()

    def unregister(self, name: str) -> None:
        self.server.manage("DELETE", f"/models/{name}")

    def front_pids(self) -> list[int]:
        return [self.server.proc.pid]

    def worker_pids(self) -> list[int]:
        return [p.pid for p in _descendants(self.server.proc.pid)]

    def stop(self) -> None:
        self.server.stop()


class TorchServe:
    """TorchServe 0.12 from its own virtual environment; its front end is the Java process."""

    name = "torchserve"

    def __init__(self, store: Path, venv: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="torchserve-bench-"))
        ports = [free_port() for _ in range(3)]
        self.inference = f"http://127.0.0.1:{ports[0]}"
        self.management = f"http://127.0.0.1:{ports[1]}"
        config = self.workdir / "config.properties"
        config.write_text("\n".join([
            f"inference_address={self.inference}", f"management_address={self.management}",
            f"metrics_address=http://127.0.0.1:{ports[2]}", "disable_token_authorization=true",
            "enable_model_api=true", "default_workers_per_model=1",
            f"model_store={store}", "install_py_dep_per_model=false",
            # its once-a-minute system metrics script would take CPU from whichever system
            # is being measured at that moment (all run side by side)
            "disable_system_metrics=true"]) + "\n")
        env = dict(os.environ, LOG_LOCATION=str(self.workdir / "logs"),
                   METRICS_LOCATION=str(self.workdir / "logs"), TEMP=str(self.workdir))
        started = time.perf_counter()
        self.proc = _start(
            [str(venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs",
             "--model-store", str(store), "--ts-config", str(config)],
            self.inference + "/ping", self.workdir / "torchserve.out", "TorchServe", env=env,
            cwd=self.workdir)
        self.ready = time.perf_counter() - started

    def supports(self, workload: Workload) -> bool:
        return workload.peers

    def register(self, workload: Workload, name: str, batch_size: int, delay_ms: int) -> None:
        r = requests.post(f"{self.management}/models", params={
            "url": f"{workload.name}.mar", "model_name": name, "batch_size": batch_size,
            "max_batch_delay": delay_ms, "initial_workers": 1, "synchronous": "true"},
            timeout=300)
        r.raise_for_status()

    def unregister(self, name: str) -> None:
        requests.delete(f"{self.management}/models/{name}", timeout=60)

    def front_pids(self) -> list[int]:
        return [p.pid for p in _descendants(self.proc.pid) if p.name().startswith("java")]

    def worker_pids(self) -> list[int]:
        """The Python workers (the launcher script and the front end left out)."""
        java = self.front_pids()
        return [p.pid for p in _descendants(self.proc.pid) if p.pid not in java]

    def stop(self) -> None:
        _stop(self.proc)


class LitServe:
    """LitServe from its own virtual environment, started once per model and batch size
    (batching is a setting of its server, not of a registration).

    Its front end is every process but the inference workers: the uvicorn server, the
    multiprocessing manager that carries its queues, and the launcher.
    """

    name = "litserve"

    def __init__(self, store: Path, venv: Path) -> None:
        self.store = store
        self.python = venv / "bin" / "python"
        self.workdir = Path(tempfile.mkdtemp(prefix="litserve-bench-"))
        self.proc: subprocess.Popen | None = None
        self.ready = float("nan")
        self.inference = ""

    def supports(self, workload: Workload) -> bool:
        return workload.content_type == "application/json" and workload.peers

    def register(self, workload: Workload, name: str, batch_size: int, delay_ms: int) -> None:
        port = free_port()
        self.inference = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        self.proc = _start(
            [str(self.python), str(HERE / "litserve_app.py"),
             "--model", str(self.store / "src" / workload.model), "--port", str(port),
             "--api-path", f"/predictions/{name}", "--max-batch-size", str(batch_size),
             "--batch-timeout", str(delay_ms / 1000)],
            self.inference + "/health", self.workdir / f"{name}.out", "LitServe",
            cwd=self.workdir)
        if self.ready != self.ready:  # the first start is the one reported
            self.ready = time.perf_counter() - started

    def unregister(self, name: str) -> None:
        self.stop()

    def _is_worker(self, process: psutil.Process) -> bool:
        try:
            return "spawn_main" in " ".join(process.cmdline())
        except psutil.Error:
            return False

    def front_pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [self.proc.pid] + [p.pid for p in _descendants(self.proc.pid)
                                  if not self._is_worker(p)]

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [p.pid for p in _descendants(self.proc.pid) if self._is_worker(p)]

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


class BareTornado:
    """The floor (``bare_tornado.py``): no model, a constant answer, Tornado's work alone."""

    name = "tornado"

    def __init__(self, event_loop: str = "auto") -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="tornado-bench-"))
        port = free_port()
        self.inference = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        self.proc = _start([sys.executable, str(HERE / "bare_tornado.py"), "--port", str(port),
                            "--event-loop", event_loop],
                           self.inference + "/", self.workdir / "tornado.out", "bare Tornado")
        self.ready = time.perf_counter() - started

    def supports(self, workload: Workload) -> bool:
        return workload.name == "mlp"

    def register(self, workload: Workload, name: str, batch_size: int, delay_ms: int) -> None:
        pass

    def unregister(self, name: str) -> None:
        pass

    def front_pids(self) -> list[int]:
        return [self.proc.pid]

    def worker_pids(self) -> list[int]:
        return []

    def stop(self) -> None:
        _stop(self.proc)

"""The systems under test, started on 127.0.0.1 and stopped by PID: tsf and TorchServe 0.12."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import requests

from tsf.testing import ServerProcess, free_port


def tree_rss(pid: int) -> tuple[float, float]:
    """(front-end RSS, sum of worker RSS) in MB for a server process and its children."""
    try:
        root = psutil.Process(pid)
        front = root.memory_info().rss
        workers = sum(c.memory_info().rss for c in root.children(recursive=True))
    except psutil.Error:
        return 0.0, 0.0
    return front / 2**20, workers / 2**20


class Tsf:
    name = "tsf"

    def __init__(self, store: Path) -> None:
        started = time.perf_counter()
        # The stage-timer contrib example wraps every stage of every model; a production
        # install would not carry it, so the benchmark leaves it out.
        self.server = ServerProcess(model_store=store, config={"log_level": "WARNING"},
                                    env={"TSF_DISABLE_PLUGINS": "stage_timer"})
        self.ready = time.perf_counter() - started
        self.inference = self.server.inference

    def register(self, archive: str, name: str, batch_size: int, delay_ms: int) -> None:
        r = self.server.register(archive, model_name=name, batch_size=batch_size,
                                 max_batch_delay=delay_ms, initial_workers=1)
        r.raise_for_status()

    def unregister(self, name: str) -> None:
        self.server.manage("DELETE", f"/models/{name}")

    def rss(self) -> tuple[float, float]:
        return tree_rss(self.server.proc.pid)

    def stop(self) -> None:
        self.server.stop()


class TorchServe:
    """TorchServe 0.12 from its own virtual environment (``--torchserve-venv``)."""

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
            # is being measured at that moment (both run side by side)
            "disable_system_metrics=true"]) + "\n")
        env = dict(os.environ, LOG_LOCATION=str(self.workdir / "logs"),
                   METRICS_LOCATION=str(self.workdir / "logs"), TEMP=str(self.workdir))
        started = time.perf_counter()
        self.log = open(self.workdir / "torchserve.out", "wb")
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs",
             "--model-store", str(store), "--ts-config", str(config)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
            start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(self.inference + "/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("TorchServe did not start; see "
                                   f"{self.workdir / 'torchserve.out'}")
            time.sleep(0.05)
        self.ready = time.perf_counter() - started

    def register(self, archive: str, name: str, batch_size: int, delay_ms: int) -> None:
        r = requests.post(f"{self.management}/models", params={
            "url": archive, "model_name": name, "batch_size": batch_size,
            "max_batch_delay": delay_ms, "initial_workers": 1, "synchronous": "true"},
            timeout=300)
        r.raise_for_status()

    def unregister(self, name: str) -> None:
        requests.delete(f"{self.management}/models/{name}", timeout=60)

    def rss(self) -> tuple[float, float]:
        """The Java front end, and the Python workers (the launcher script is left out)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
            java = [c for c in children if c.name().startswith("java")]
            workers = [c for c in children if c not in java]
            return (sum(c.memory_info().rss for c in java) / 2**20,
                    sum(c.memory_info().rss for c in workers) / 2**20)
        except psutil.Error:
            return 0.0, 0.0

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()

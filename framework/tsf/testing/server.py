"""A real ``tsf serve`` on ephemeral loopback ports, and the helpers tests use around it:
ports, polling, stopping processes, checking error bodies, random pictures, raw HTTP bytes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = "http://127.0.0.1:0"


def assert_error(response: Any, code: int, type_: str | None = None,
                 text: str | None = None) -> dict:
    """Assert ``response`` is tsf's JSON error with this code (and type / message text)."""
    assert response.status_code == code, (response.status_code, response.text)
    body = response.json()
    assert set(body) >= {"code", "type", "message"}, body
    assert body["code"] == code, body
    if type_ is not None:
        assert body["type"] == type_, body
    if text is not None:
        assert text in body["message"], body
    return body


def random_image(fmt: str = "JPEG", size: tuple[int, int] = (80, 60), seed: int = 0) -> bytes:
    """An encoded picture of random pixels (``size`` is width, height), for handler tests."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def exchange_raw(base: str, data: bytes, timeout: float = 30.0, half_close: bool = False
                 ) -> bytes:
    """Send ``data`` whole on a fresh connection to ``base`` (then stop sending, with
    ``half_close``, as ``nc -N`` does); return everything the server answers until it closes."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed while the request was still going out
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
    return received


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for helper processes in tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fixed_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range, for a server that must
    bind the same port again after a restart: a port from :func:`free_port` can meanwhile become
    the local port of some outgoing connection, and then the restart fails with EADDRINUSE."""
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def wait_for(condition: Any, timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``condition()`` until it returns something true (returned), or fail the test with
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(step)


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM ``proc``, and SIGKILL it if it has not exited after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ServerProcess:
    """A running ``tsf serve`` and HTTP helpers bound to its three ports."""

    def __init__(self, model_store: str | os.PathLike | None = None,
                 models: list[str] | None = None, config: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, ready_timeout: float = 60.0,
                 args: list[str] | None = None) -> None:
        """``args``, when given, replace the config file and loopback addresses this class
        otherwise passes (a KServe or TorchServe command line); ``--workspace`` and
        ``--ready-file`` are always added."""
        self.workdir = Path(tempfile.mkdtemp(prefix="tsf-test-"))
        ready_file = self.workdir / "ready.json"
        cmd = [sys.executable, "-m", "tsf.cli", "serve"]
        if args is None:
            config_file = self.workdir / "config.properties"
            lines = [f"{k}={v}" for k, v in (config or {}).items()]
            config_file.write_text("\n".join(lines) + "\n")
            cmd += ["--ts-config", str(config_file), "--inference-address", LOOPBACK,
                    "--management-address", LOOPBACK, "--metrics-address", LOOPBACK]
        else:
            cmd += args
        cmd += ["--workspace", str(self.workdir / "workspace"), "--ready-file", str(ready_file)]
        if model_store is not None:
            cmd += ["--model-store", str(model_store)]
        if models:
            cmd += ["--models", *models]
        self.log_path = self.workdir / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})},
                                     start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        while not ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"tsf serve exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tsf serve was not ready in {ready_timeout} s:\n{self.log()}")
            time.sleep(0.02)
        self.info = json.loads(ready_file.read_text())
        self.urls: dict[str, str] = self.info["urls"]

    @property
    def inference(self) -> str:
        return self.urls["inference"]

    @property
    def management(self) -> str:
        return self.urls["management"]

    @property
    def metrics(self) -> str:
        return self.urls["metrics"]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, base: str, path: str, **kwargs: Any):
        import requests

        kwargs.setdefault("timeout", 120)
        return requests.request(method, base + path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.request("POST", self.inference, path, **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", self.inference, path, **kwargs)

    def manage(self, method: str, path: str, **kwargs: Any):
        return self.request(method, self.management, path, **kwargs)

    def register(self, url: str, **params: Any):
        params = {"url": url, "synchronous": "true", **params}
        return self.manage("POST", "/models", params=params)

    def scrape(self) -> str:
        return self.request("GET", self.metrics, "/metrics").text

    def worker_pids(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            children = self.worker_pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()

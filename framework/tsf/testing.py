"""Testing helpers and a pytest plugin: start a real ``tsf serve`` on ephemeral loopback ports.

Enabled automatically through the ``pytest11`` entry point once tsf-framework is installed::

    def test_my_handler(tsf_server, tmp_path):
        server = tsf_server(model_store=tmp_path, models=["mine=mine.mar"])
        assert server.post("/predictions/mine", json=[1, 2]).status_code == 200

Every server started through the fixture is stopped (by PID, SIGTERM then SIGKILL) at the end of
the test, together with its worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .workers.messages import PREDICT, Answer, Batch, Part, Request

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


try:
    import pytest
except ImportError:  # pragma: no cover - tsf.testing is usable without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def tsf_server() -> Iterator[Any]:
        """Factory fixture: ``tsf_server(model_store=..., models=[...], config={...})``."""
        started: list[ServerProcess] = []

        def start(**kwargs: Any) -> ServerProcess:
            server = ServerProcess(**kwargs)
            started.append(server)
            return server

        yield start
        for server in started:
            server.stop()


# --- in-process handler harness -----------------------------------------------------------------

class HarnessAnswer:
    """One request's answer from :class:`HandlerHarness`: status, content type, headers, body."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.status: int = answer.status
        self.content_type: str = answer.ctype
        self.headers: dict[str, str] = answer.headers
        self.body = answer.body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def tensors(self) -> dict[str, Any]:
        """A KServe v2 / OIP answer's output tensors by name (``torch.Tensor``, or nested lists
        of ``bytes`` for ``BYTES`` outputs)."""
        from .oip.tensors import TENSOR_CTYPE, TENSORS_CTYPE, decode_tensor

        if self.content_type != TENSORS_CTYPE or self.answer.tensors is None:
            raise ValueError(f"not an OIP tensor answer: {self!r}")
        out, offset = {}, 0
        for descriptor in self.answer.tensors:
            end = offset + descriptor["size"]
            name = descriptor["name"]
            out[name] = decode_tensor(Part(name, self.body[offset:end], TENSOR_CTYPE,
                                           datatype=descriptor["datatype"],
                                           shape=descriptor["shape"], encoding="raw"))
            offset = end
        return out

    def __repr__(self) -> str:
        return f"HarnessAnswer({self.status}, {self.content_type!r}, {self.body[:80]!r})"


def harness_request(body: Any, content_type: str | None = None,
                    headers: dict[str, str] | None = None,
                    params: dict[str, str] | None = None) -> Request:
    """The worker-side message of one request: bytes as they are, str as text, anything else as
    a JSON body; ``body`` may also be ``{part name: bytes}`` for a multipart-style request."""
    if isinstance(body, dict) and body and all(isinstance(v, (bytes, bytearray))
                                                  for v in body.values()):
        parts = [Part(name, bytes(value), content_type or "application/octet-stream")
                 for name, value in body.items()]
    else:
        if isinstance(body, (bytes, bytearray)):
            data, default = bytes(body), "application/octet-stream"
        elif isinstance(body, str):
            data, default = body.encode(), "text/plain"
        else:
            data, default = json.dumps(body).encode(), "application/json"
        parts = [Part("body", data, content_type or default)]
    return Request("harness", parts, dict(headers or {}), dict(params or {}))


def oip_request(inputs: dict[str, Any], headers: dict[str, str] | None = None,
                params: dict[str, str] | None = None) -> Request:
    """The worker-side message of one KServe v2 / OIP request: ``{input name: tensor}`` (a
    ``torch.Tensor``, anything ``torch.as_tensor`` takes, or lists of str/bytes for ``BYTES``),
    each input passed as binary data as the front end passes it."""
    from .oip.tensors import PROTOCOL, TENSOR_CTYPE, encode_outputs

    parts = []
    for name, value in inputs.items():
        [descriptor], raw = encode_outputs({name: value}, name)
        parts.append(Part(name, raw, TENSOR_CTYPE, datatype=descriptor["datatype"],
                          shape=descriptor["shape"], encoding="raw"))
    return Request("harness", parts, dict(headers or {}), dict(params or {}),
                   protocol=PROTOCOL)


class HandlerHarness:
    """Runs a handler's batches in this process, through the worker's own loading code and
    ``BatchRunner`` (the same decode, stage hooks, one-bad-request isolation and encoding as a
    worker process), with no socket and no server.  Made for plugin and handler unit tests::

        harness = HandlerHarness.from_archive("mnist.mar")
        [answer] = harness.run([b"<png bytes>"])
        assert answer.status == 200 and answer.json()[0] in range(10)

    ``handler`` is a name (``"base"``, a plugin's handler, ``"file.py"`` in ``model_dir``) or a
    handler instance.  Each ``run`` (``run_oip`` for KServe v2 / OIP tensors, ``run_requests``
    for a mix) is one batch.
    """

    def __init__(self, model_dir: str | os.PathLike, handler: Any = "", *,
                 manifest: dict | None = None, model_config: dict | None = None,
                 model_name: str = "model", model_version: str = "1.0",
                 batch_size: int = 8) -> None:
        from .workers.batch_runner import BatchRunner
        from .workers.main import load

        name = handler if isinstance(handler, str) else ""
        manifest = manifest or {"runtime": "python", "model": {
            "modelName": model_name, "modelVersion": model_version, "handler": name}}
        spec = {"model_name": model_name, "model_version": model_version,
                "model_dir": str(model_dir), "manifest": manifest,
                "model_config": model_config or {}, "handler": name,
                "batch_size": batch_size, "worker_id": "harness", "worker_index": 0}
        self.pm, self.context = load(spec, None if isinstance(handler, str) else handler)
        self.runner = BatchRunner(self.pm, self.context)
        self._ids = 0

    @classmethod
    def from_archive(cls, path: str | os.PathLike, workspace: str | os.PathLike | None = None,
                     **kwargs: Any) -> "HandlerHarness":
        """A harness for an archive (``.mar``, ``.tar.gz`` or folder), unpacked as tsf does."""
        from .archive import Limits, open_archive

        target = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="tsf-harness-"))
        archive = open_archive(Path(path), target, Limits())
        kwargs.setdefault("model_name", archive.model_name or "model")
        kwargs.setdefault("model_version", archive.model_version)
        return cls(archive.model_dir, archive.handler, manifest=archive.manifest,
                   model_config=archive.model_config, **kwargs)

    def run(self, bodies: list[Any], kind: str = "predict",
            content_type: str | None = None, headers: dict[str, str] | None = None,
            params: dict[str, str] | None = None) -> list[HarnessAnswer]:
        """One batch of requests (see :func:`harness_request` for what a body may be)."""
        return self.run_requests([harness_request(body, content_type, headers, params)
                                  for body in bodies], kind)

    def run_oip(self, inputs: list[dict[str, Any]], headers: dict[str, str] | None = None,
                params: dict[str, str] | None = None) -> list[HarnessAnswer]:
        """One batch of KServe v2 / OIP requests, each ``{input name: tensor}`` (see
        :func:`oip_request`); :meth:`HarnessAnswer.tensors` reads the answers."""
        return self.run_requests([oip_request(request, headers, params) for request in inputs])

    def run_requests(self, requests: list[Request], kind: str = PREDICT) -> list[HarnessAnswer]:
        """One batch of requests made by :func:`harness_request` or :func:`oip_request`."""
        batch = []
        for request in requests:
            self._ids += 1
            batch.append(dataclasses.replace(request, id=f"harness-{self._ids}", kind=kind))
        return [HarnessAnswer(answer) for answer in self.runner.run(Batch(batch)).answers]

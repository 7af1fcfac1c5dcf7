"""One worker process as the front end sees it: spawn, handshake, batches, kill.

The worker gets one end of a ``socketpair`` (no filesystem path, no connect race).  Its stdout
and stderr are forwarded to the log line by line, prefixed with the worker id, and the last lines
are kept so that a crash or a load failure can be reported with them.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Callable

from ..errors import ModelLoadError, TsfError, WorkerDied, WorkerTimeout, from_dict
from . import protocol

log = logging.getLogger("tsf.worker")

STDERR_TAIL_LINES = 40


class WorkerProcess:
    """A worker process serving one model version, one batch at a time."""

    def __init__(self, worker_id: str, index: int, spec: dict, threads: int) -> None:
        self.id = worker_id
        self.index = index
        self.spec = dict(spec, worker_id=worker_id, worker_index=index)
        self.threads = threads
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.start_time = time.time()
        self.status = "STARTING"
        self.load_seconds = 0.0  # process start to READY
        self.device = "cpu"
        self.signature: dict | None = None  # the handler's OIP signature, if it declares one
        self.retiring = False
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._timed_out = False
        self._log_tasks: list[asyncio.Task] = []

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and \
            self.status in ("READY", "BUSY") and not self.retiring

    def tail_text(self) -> str:
        return "\n".join(self.tail)

    async def start(self, startup_timeout: float) -> None:
        """Spawn the process and wait for READY; raise ModelLoadError otherwise."""
        started = time.monotonic()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")
        # OpenMP threads spin for a while after each parallel region by default; on a machine
        # whose cores the front end shares, that spinning takes the CPU the front end needs to
        # feed the worker.  Sleeping at once costs nothing measurable for compute-bound models.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tsf.workers.main", "--fd", str(child.fileno()),
                "--spec", json.dumps(self.spec), pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env)
        finally:
            child.close()
        self.pid = self.proc.pid
        self._log_tasks = [asyncio.ensure_future(self._forward(self.proc.stdout, logging.INFO)),
                           asyncio.ensure_future(self._forward(self.proc.stderr, logging.INFO))]
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        try:
            kind, header, _ = await asyncio.wait_for(protocol.read_frame(self._reader),
                                                     startup_timeout)
        except asyncio.TimeoutError:
            self.kill()
            raise ModelLoadError(f"worker {self.id} did not load the model within "
                                 f"{startup_timeout:g} s (startup_timeout)") from None
        except (EOFError, ConnectionError, protocol.ProtocolError):
            await self._reap()
            raise ModelLoadError(f"worker {self.id} exited while loading the model "
                                 f"(exit code {self.proc.returncode}):\n{self.tail_text()}"
                                 ) from None
        if kind == protocol.LOAD_ERROR:
            await self._reap()
            error = from_dict(header.get("error", {}))
            raise ModelLoadError(f"failed to load model: {error.message}")
        self.status = "READY"
        self.device = header.get("device", "cpu")
        self.signature = header.get("signature")
        self.load_seconds = time.monotonic() - started

    async def _forward(self, stream: asyncio.StreamReader | None, level: int) -> None:
        if stream is None:
            return
        name = self.spec.get("model_name", "?")
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self.tail.append(text)
            log.log(level, "[%s %s] %s", name, self.id, text,
                    extra={"model": name, "worker_id": self.id})

    async def _reap(self, timeout: float = 5.0) -> None:
        """Wait for the process to exit and its output to be read (for the stderr tail)."""
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.kill()
            await self.proc.wait()
        if self._log_tasks:
            await asyncio.wait(self._log_tasks, timeout=2.0)
        self.status = "DEAD"
        self.close_socket()

    def close_socket(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _on_timeout(self) -> None:
        self._timed_out = True
        self.kill()

    async def run_batch(self, header: dict, blobs: list[bytes], timeout: float,
                        on_partial: Callable[[dict, bytes], None] | None = None
                        ) -> tuple[dict, list[bytes]]:
        """Send one batch and wait for its results; a timeout kills the worker.

        Intermediate answers a streaming handler sends before the results go to ``on_partial``
        as they arrive; each restarts the timeout (as TorchServe counts it per answer).
        """
        assert self._writer is not None and self._reader is not None
        self.status = "BUSY"
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, self._on_timeout)
        try:
            protocol.write_frame(self._writer, protocol.BATCH, header, blobs)
            await self._writer.drain()
            kind, result, result_blobs = await protocol.read_frame(self._reader)
            while kind == protocol.PARTIAL:
                timer.cancel()
                timer = loop.call_later(timeout, self._on_timeout)
                if on_partial is not None:
                    on_partial(result, result_blobs[0] if result_blobs else b"")
                kind, result, result_blobs = await protocol.read_frame(self._reader)
        except (EOFError, ConnectionError, protocol.ProtocolError) as exc:
            await self._reap()
            if self._timed_out:
                raise WorkerTimeout(
                    f"worker {self.id} did not answer within {timeout:g} s "
                    "(response_timeout); it was stopped and will be restarted") from None
            log.error("worker %s died (exit code %s); last output:\n%s", self.id,
                      self.proc.returncode if self.proc else None, self.tail_text())
            raise WorkerDied(f"worker {self.id} died while processing the batch (exit code "
                             f"{self.proc.returncode if self.proc else '?'}); it will be "
                             f"restarted") from exc
        finally:
            timer.cancel()
        if kind != protocol.RESULT:
            raise TsfError(f"worker {self.id} sent an unexpected frame kind {kind}")
        self.status = "READY"
        return result, result_blobs

    async def stop(self, grace: float = 5.0) -> None:
        """Close the socket (the worker exits on EOF); kill it if it lingers."""
        self.retiring = True
        self.close_socket()
        await self._reap(grace)

    def describe(self) -> dict[str, Any]:
        memory = 0
        if self.pid and self.alive:
            try:
                import psutil

                memory = psutil.Process(self.pid).memory_info().rss
            except Exception:
                memory = 0
        gpu = self.device.startswith("cuda")
        return {
            "id": self.id,
            "startTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.start_time)),
            "status": "UNLOADING" if self.retiring else self.status,
            "memoryUsage": memory,
            "pid": self.pid or -1,
            "gpu": gpu,
            "gpuUsage": self.device if gpu else "N/A",
        }

"""One worker process as the front end sees it: spawn, handshake, batches, kill.

The worker gets one end of a ``socketpair`` (no filesystem path, no connect race) and, as the
first frame on it, the description of the model to serve.  The worker computes one batch at a
time, in the order they were sent, so the front end may send the next batches before the
current one is answered (up to ``worker_pipeline_depth``): they wait in the socket, and the
worker starts the next one the moment it has written an answer.  One reader per worker takes
the answers as they come and hands each to the callback its batch was sent with.  A batch's
``response_timeout`` counts from when the worker starts it (when the answer before it arrived),
not from when it was sent.  Its stdout and stderr are read
without pause while it lives and forwarded to the log line by line (see ``tsf.workers.output``),
prefixed with the worker id; the last lines are kept so that a crash or a load failure can be
reported with them.  Every kill records its reason, for the log line that reports the exit.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Callable

from ..errors import (BatchNotStarted, ModelLoadError, TsfError, WorkerCrashed, WorkerDied,
                      WorkerTimeout, from_dict)
from . import protocol
from .messages import Answer, Batch, BatchResult, ProfileOrder
from .output import CHUNK, LevelReader, LineBudget, LineSplitter
from .spawn import SpawnedProcess, spawn

log = logging.getLogger("tsf.worker")

STDERR_TAIL_LINES = 40

# libgomp's spins before an idle OpenMP thread sleeps, in workers (see WorkerProcess.start)
WORKER_SPIN_COUNT = "3000"

# called once per batch: (result, None, started) or (None, error, started); ``started`` is the
# time.monotonic() at which the worker began the batch (0.0 if it never did)
BatchDone = Callable[[BatchResult | None, TsfError | None, float], None]


class _InFlight:
    """A batch sent to the worker and not answered yet."""

    __slots__ = ("number", "on_partial", "on_done", "timeout", "started")

    def __init__(self, number: int, on_partial: Callable[[Answer], None] | None,
                 on_done: BatchDone, timeout: float) -> None:
        self.number = number  # batches sent to this worker before it
        self.on_partial = on_partial
        self.on_done = on_done
        self.timeout = timeout
        self.started = 0.0


class WorkerProcess:
    """A worker process serving one model version: it computes one batch at a time, and holds
    the batches sent after it in its socket until then."""

    def __init__(self, worker_id: str, index: int, spec: dict, threads: int) -> None:
        self.id = worker_id
        self.index = index
        self.spec = dict(spec, worker_id=worker_id, worker_index=index)
        self.threads = threads
        self.proc: SpawnedProcess | None = None
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
        self.busy_since: float | None = None  # time.monotonic() at the start of the batch
        self.kill_reason = ""  # why the front end killed or stopped it, for the exit log line
        self.held = False  # the batcher holds it while a batch for it fills (see WorkerPool)
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        self._answers: asyncio.Task | None = None  # the reader of RESULT and PARTIAL frames
        self._timer: asyncio.TimerHandle | None = None  # response_timeout of the batch begun
        self._sent = 0  # batches sent so far (the worker numbers them the same way)

    @property
    def in_flight(self) -> int:
        """Batches sent and not answered yet (the first is being computed)."""
        return len(self._in_flight)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and \
            self.status in ("READY", "BUSY") and not self.retiring

    def busy_for(self) -> float:
        """Seconds spent on the current batch (0 when idle)."""
        return time.monotonic() - self.busy_since if self.busy_since is not None else 0.0

    def tail_text(self) -> str:
        return "\n".join(self.tail)

    def exit_description(self) -> str:
        """How the process ended, and why when the front end ended it."""
        code = self.proc.returncode if self.proc is not None else None
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        return f"{how} ({self.kill_reason})" if self.kill_reason else how

    def memory_rss(self) -> int:
        """Resident memory of the process in bytes (0 if it cannot be read)."""
        if not self.pid or self.proc is None or self.proc.returncode is not None:
            return 0
        try:
            import psutil

            return psutil.Process(self.pid).memory_info().rss
        except Exception:
            return 0

    async def start(self, startup_timeout: float) -> None:
        """Spawn the process and wait for READY; raise ModelLoadError otherwise."""
        started = time.monotonic()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")
        # OpenMP threads (libgomp, torch's on Linux) spin 300,000 rounds after each parallel
        # region by default: on cores the front end shares, that takes the CPU it needs to feed
        # the worker.  Sleeping at once (OMP_WAIT_POLICY=PASSIVE) makes each of a conv net's
        # back-to-back regions wake its threads again.  A short spin keeps a forward pass's
        # threads awake between its regions and lets them sleep once it ends.
        if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
            env["GOMP_SPINCOUNT"] = WORKER_SPIN_COUNT
        try:
            self.proc = await spawn(
                [sys.executable, "-X", "faulthandler", "-m", "tsf.runtime.main",
                 "--fd", str(child.fileno()), "--parent", str(os.getpid())],
                env=env, pass_fds=(child.fileno(),), blocked_signals=(signal.SIGTERM,))
        finally:
            child.close()
        self.pid = self.proc.pid
        self._log_tasks = [asyncio.ensure_future(self._forward(self.proc.stdout, stderr=False)),
                           asyncio.ensure_future(self._forward(self.proc.stderr, stderr=True))]
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        try:
            protocol.write_frame(self._writer, protocol.SPEC, self.spec)
            await self._writer.drain()
            kind, header, _ = await asyncio.wait_for(protocol.read_frame(self._reader),
                                                     startup_timeout)
        except asyncio.TimeoutError:
            self.kill(f"startup_timeout of {startup_timeout:g} s")
            raise ModelLoadError(f"worker {self.id} did not load the model within "
                                 f"{startup_timeout:g} s (startup_timeout)") from None
        except (EOFError, ConnectionError, protocol.ProtocolError):
            await self._reap()
            how = self.exit_description()
            message = f"worker {self.id} exited while loading the model ({how}):\n" \
                      f"{self.tail_text()}"
            if self.proc.returncode < 0 and not self.kill_reason:
                raise WorkerCrashed(message, how=how) from None
            raise ModelLoadError(message) from None
        if kind == protocol.LOAD_ERROR:
            await self._reap()
            error = from_dict(header.get("error", {}))
            raise ModelLoadError(f"failed to load model: {error.message}")
        self.status = "READY"
        self.device = header.get("device", "cpu")
        self.signature = header.get("signature")
        self.load_seconds = time.monotonic() - started
        self._answers = asyncio.ensure_future(self._read_answers())

    async def _forward(self, stream: asyncio.StreamReader | None, stderr: bool) -> None:
        """Log ``stream`` line by line until EOF; never stops early, whatever the output."""
        if stream is None:
            return
        splitter, budget = LineSplitter(), LineBudget()
        levels = LevelReader() if stderr else None
        while chunk := await stream.read(CHUNK):
            try:
                for line in splitter.feed(chunk):
                    self._log_line(line, levels, budget)
            except Exception:  # a log handler failing must not stop the draining of the pipe
                log.exception("forwarding the output of worker %s failed", self.id)
        for line in splitter.flush():
            self._log_line(line, levels, budget)
        self._report_dropped(budget)

    def _log_line(self, line: str, levels: LevelReader | None, budget: LineBudget) -> None:
        self.tail.append(line)
        level = levels.level(line) if levels is not None else logging.INFO
        if not budget.take():
            if budget.dropped == 1:  # the first line dropped since the last report
                asyncio.get_running_loop().call_later(1.0, self._report_dropped, budget)
            return
        self._report_dropped(budget)
        name = self.spec.get("model_name", "?")
        log.log(level, "[%s %s] %s", name, self.id, line,
                extra={"model": name, "worker_id": self.id})

    def _report_dropped(self, budget: LineBudget) -> None:
        dropped = budget.report_dropped()
        if dropped:
            name = self.spec.get("model_name", "?")
            log.warning("[%s %s] ... [%d lines of output not logged: over %d lines/s]", name,
                        self.id, dropped, budget.per_second,
                        extra={"model": name, "worker_id": self.id})

    async def _reap(self, timeout: float = 5.0) -> None:
        """Wait for the process to exit and its output to be read (for the stderr tail)."""
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.kill(self.kill_reason or f"did not exit within {timeout:g} s of being asked")
            await self.proc.wait()
        if self._log_tasks:
            await asyncio.wait(self._log_tasks, timeout=2.0)
        self.status = "DEAD"
        self.close_socket()

    def close_socket(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def kill(self, reason: str = "") -> None:
        """SIGKILL the process; ``reason`` goes into the log line that reports its exit."""
        if self.proc is not None and self.proc.returncode is None:
            self.kill_reason = reason
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _on_timeout(self, timeout: float) -> None:
        self._timed_out = True
        self.kill(f"no answer within response_timeout of {timeout:g} s")

    def send_batch(self, batch: Batch, timeout: float, on_done: BatchDone,
                   on_partial: Callable[[Answer], None] | None = None) -> int:
        """Send ``batch``; ``on_done`` gets its result or error once the worker answers it.

        Intermediate answers a streaming handler sends before the result go to ``on_partial``
        as they arrive; each restarts the timeout (as TorchServe counts it per answer).  A
        timeout kills the worker.  If the worker dies first, the batch it was computing fails
        with WorkerDied (or WorkerTimeout), and each batch it had not begun with
        BatchNotStarted, which its sender may send again.  Returns the batch's number, for
        :meth:`cancel`.
        """
        number, now = self._sent, time.monotonic()
        if self._writer is None:
            on_done(None, BatchNotStarted(f"worker {self.id} is gone; the batch was not sent"),
                    0.0)
            return number
        protocol.write_frame(self._writer, protocol.BATCH, *batch.to_wire())
        self._sent += 1
        self._in_flight.append(_InFlight(number, on_partial, on_done, timeout))
        if len(self._in_flight) == 1:
            self._begin_next(now)
        return number

    def cancel(self, number: int, index: int) -> bool:
        """Ask the worker not to run request ``index`` of batch ``number`` (its client went
        away); True if that batch was still waiting behind another, so the worker skips it."""
        if self._writer is None or not any(entry.number == number
                                           for entry in list(self._in_flight)[1:]):
            return False
        protocol.write_frame(self._writer, protocol.CANCEL, {"batch": number, "index": index})
        return True

    def profile(self, order: ProfileOrder) -> bool:
        """Ask the worker to profile its next batches; False if it is not running."""
        if self._writer is None or not self.alive:
            return False
        protocol.write_frame(self._writer, protocol.PROFILE, order.to_wire())
        return True

    async def run_batch(self, batch: Batch, timeout: float,
                        on_partial: Callable[[Answer], None] | None = None) -> BatchResult:
        """Send one batch and wait for its result (see :meth:`send_batch`)."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()

        def done(result: BatchResult | None, error: TsfError | None, started: float) -> None:
            if not future.done():
                future.set_result(result) if error is None else future.set_exception(error)

        self.send_batch(batch, timeout, done, on_partial)
        return await future

    def _begin_next(self, now: float | None = None) -> None:
        """The worker has begun the first batch in flight (at ``now``): start its clock."""
        if not self._in_flight:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.status = "READY"
            self.busy_since = None
            return
        head = self._in_flight[0]
        self.status = "BUSY"
        head.started = self.busy_since = time.monotonic() if now is None else now
        self._restart_timer(head.timeout)

    async def _read_answers(self) -> None:
        """Hand each frame to :meth:`_on_frame` until the socket closes; then the worker is
        dead and what it held fails."""
        assert self._reader is not None
        reader = self._reader
        try:
            while True:
                self._on_frame(*await protocol.read_frame(reader))
        except asyncio.CancelledError:
            self._fail_in_flight()
            raise
        except Exception as exc:  # EOF, a broken socket, or an answer that is not one
            if not isinstance(exc, (EOFError, ConnectionError)):
                log.error("worker %s sent something that is not a valid answer: %r", self.id,
                          exc)
                self.kill(f"sent something that is not a valid answer ({exc})")
            self.status = "DEAD"  # no batch is sent to it from now on
            await self._reap()
            self._fail_in_flight()

    def _on_frame(self, kind: int, header: dict, blobs: list) -> None:
        """A frame from the worker: a partial answer or the result of the batch at the head."""
        if not self._in_flight:
            raise protocol.ProtocolError(f"frame kind {kind} with no batch in flight")
        head = self._in_flight[0]
        if kind == protocol.PARTIAL:
            self._restart_timer(head.timeout)
            if head.on_partial is not None:
                head.on_partial(Answer.from_wire(header, blobs))
            return
        if kind != protocol.RESULT:
            raise protocol.ProtocolError(f"unexpected frame kind {kind}")
        result = BatchResult.from_wire(header, blobs)
        self._in_flight.popleft()
        self._begin_next()
        _call(head.on_done, result, None, head.started)

    def _restart_timer(self, timeout: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(timeout, self._on_timeout, timeout)

    def _fail_in_flight(self) -> None:
        """The worker is gone: fail the batch it was computing, and hand back the others."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.busy_since = None
        if not self._in_flight:
            return
        head = self._in_flight.popleft()
        if self._timed_out:
            error: TsfError = WorkerTimeout(
                f"worker {self.id} did not answer within {head.timeout:g} s "
                "(response_timeout); it was stopped and will be restarted")
        elif self.retiring and self.kill_reason:
            error = WorkerDied(f"worker {self.id} died while processing the batch: it was "
                               f"stopped ({self.kill_reason})")
        else:
            log.error("worker %s died (%s); last output:\n%s", self.id,
                      self.exit_description(), self.tail_text())
            error = WorkerDied(f"worker {self.id} died while processing the batch "
                               f"({self.exit_description()}); it will be restarted")
        waiting = list(self._in_flight)
        self._in_flight.clear()
        _call(head.on_done, None, error, head.started)
        for entry in reversed(waiting):  # each goes back to the front of its queue
            _call(entry.on_done, None, BatchNotStarted(
                f"worker {self.id} died before it began this batch"), 0.0)

    async def stop(self, reason: str = "", grace: float = 5.0) -> None:
        """Close the socket (the worker exits on EOF); kill it if it lingers."""
        self.retiring = True
        self.kill_reason = self.kill_reason or reason
        self.close_socket()
        await self._reap(grace)
        if self._answers is not None:
            await asyncio.wait([self._answers], timeout=1.0)

    def describe(self) -> dict[str, Any]:
        memory = self.memory_rss() if self.alive else 0
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


def _call(on_done: BatchDone, result: BatchResult | None, error: TsfError | None,
          started: float) -> None:
    try:
        on_done(result, error, started)
    except Exception:  # one batch's bookkeeping must not stop the answers of the next
        log.exception("handling a batch's answer failed")

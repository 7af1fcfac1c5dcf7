"""Starting processes from the front end without fork(), on whichever asyncio loop runs.

uvloop's ``subprocess_exec`` forks, and a fork runs in the child every handler that a library of
the front end registered with ``pthread_atfork``: gRPC's crashed about one worker start in a few
hundred with SIGSEGV before the worker ran a line.  :func:`spawn` starts the process with
:class:`subprocess.Popen`, which uses vfork (or posix_spawn) and so runs no such handler, then
hands its pipes and its exit to the running loop: the pipes as :class:`asyncio.StreamReader`,
the exit through a pidfd the loop watches (a waiting thread where pidfds are missing).
:func:`run` runs a command to its end (pip, for a model's requirements) the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import Mapping, Sequence


class SpawnedProcess:
    """The part of :class:`asyncio.subprocess.Process` that tsf uses."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader | None, exited: asyncio.Future) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self._exited = exited

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if not self._exited.done():
            os.kill(self.pid, sig)


async def spawn(args: Sequence[str], env: Mapping[str, str] | None = None,
                pass_fds: Sequence[int] = (), cwd: str | None = None,
                merge_stderr: bool = False,
                blocked_signals: Sequence[int] = ()) -> SpawnedProcess:
    """Start ``args`` with stdin from /dev/null, stdout and stderr piped to the loop (stderr
    into stdout with ``merge_stderr``; ``stderr`` is None then).

    ``blocked_signals`` start blocked in the new process (its signal mask is inherited), so
    that one sent before it installs its handlers waits for them instead of killing it.
    """
    loop = asyncio.get_running_loop()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked_signals) if blocked_signals \
        else None
    try:
        popen = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            env=None if env is None else dict(env), pass_fds=tuple(pass_fds), cwd=cwd)
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    stdout = await _stream(loop, popen.stdout)
    stderr = None if merge_stderr else await _stream(loop, popen.stderr)
    return SpawnedProcess(popen.pid, stdout, stderr, _watch_exit(loop, popen))


async def run(args: Sequence[str], timeout: float, cwd: str | None = None) -> tuple[int, str]:
    """Run ``args`` to its end: its exit code and its output (stdout and stderr together).
    Past ``timeout`` seconds it is killed and :class:`asyncio.TimeoutError` raised."""
    process = await spawn(args, cwd=cwd, merge_stderr=True)

    async def finish() -> tuple[int, str]:
        output = await process.stdout.read()
        return await process.wait(), output.decode("utf-8", "replace")

    try:
        return await asyncio.wait_for(finish(), timeout)
    except asyncio.TimeoutError:
        process.send_signal(signal.SIGKILL)
        await process.wait()
        raise


class _PipeProtocol(asyncio.StreamReaderProtocol):
    def eof_received(self) -> bool:
        super().eof_received()
        return False  # a pipe has no other direction to keep open: close the transport


async def _stream(loop: asyncio.AbstractEventLoop, pipe) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(loop=loop)
    await loop.connect_read_pipe(lambda: _PipeProtocol(reader, loop=loop), pipe)
    return reader


def _watch_exit(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen) -> asyncio.Future:
    """A future set to the exit code (negative: the signal) once the process exits, reaped."""
    exited = loop.create_future()
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # no pidfd (an old kernel, not Linux)
        waiting = loop.run_in_executor(None, popen.wait)
        waiting.add_done_callback(lambda done: exited.done() or exited.set_result(done.result()))
        return exited

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(popen.wait())

    loop.add_reader(pidfd, on_exit)
    return exited

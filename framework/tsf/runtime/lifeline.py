"""A worker ends with its front end: parent-death signal, and a watchdog thread as well.

On Linux the kernel sends the worker SIGKILL when the front end dies (``PR_SET_PDEATHSIG``).
Because that signal is tied to the thread that spawned the worker and is Linux-only, a daemon
thread also checks, several times a second, that the parent is still the front end that spawned
the worker and that the front end's end of the socket is still open.  When the parent is gone it
ends the process at once with ``os._exit``, even while the main thread is inside a handler; when
only the socket closed (the front end asked the worker to stop), the main thread has
``STOP_GRACE`` seconds to exit on its own first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import socket
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 3  # exit status of a worker that outlived its front end
CHECK_INTERVAL_MS = 200
STOP_GRACE = 1.0
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` when the parent dies (Linux only); True if set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parent_gone(parent_pid: int) -> bool:
    """The process that spawned us has died (we were re-parented to init or a subreaper)."""
    return os.getppid() != parent_pid


def socket_closed(sock: socket.socket, timeout_ms: int) -> bool:
    """Wait up to ``timeout_ms`` for the peer to hang up; True if it did."""
    poller = select.poll()
    # POLLIN is left out: the main thread reads the frames; hang-ups are reported regardless
    poller.register(sock.fileno(), getattr(select, "POLLRDHUP", 0))
    return any(events & _GONE for _, events in poller.poll(timeout_ms))


def _watch(sock: socket.socket, parent_pid: int) -> None:
    while not parent_gone(parent_pid):
        if socket_closed(sock, CHECK_INTERVAL_MS):
            time.sleep(STOP_GRACE)
            break
    os._exit(EXIT_ORPHANED)


def hold(sock: socket.socket, parent_pid: int) -> None:
    """Tie this process's life to the front end ``parent_pid`` reachable through ``sock``."""
    set_parent_death_signal()
    if parent_gone(parent_pid):  # the parent died before the signal was armed
        os._exit(EXIT_ORPHANED)
    threading.Thread(target=_watch, args=(sock, parent_pid), name="tsf-lifeline",
                     daemon=True).start()

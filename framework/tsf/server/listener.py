"""The HTTP listeners: connections accepted without spinning when the process runs out of file
descriptors, and served by :mod:`tsf.server.http1` (a JSON error for every malformed request).

Tornado's accept loop lets an ``accept()`` error such as EMFILE escape into the event loop,
which logs it and calls the loop again at once since the listening socket stays readable: a
core at 100 % and a log line per try.  :class:`HTTPListener` instead pauses accepting on that
socket for a moment (waiting clients stay in the kernel's backlog) and logs at most one line per
``log_interval`` with the number of failures since the last line.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Iterable

import tornado.httpserver
from tornado import iostream
from tornado.ioloop import IOLoop

from . import http1

log = logging.getLogger("tsf.http")

ACCEPT_PAUSE = 0.5
LOG_INTERVAL = 10.0
_ACCEPTS_PER_WAKEUP = 128


class Acceptor:
    """Accepts connections on one listening socket, pausing after an ``accept()`` failure."""

    def __init__(self, sock: socket.socket, callback: Callable[[socket.socket, Any], None],
                 pause: float = ACCEPT_PAUSE, log_interval: float = LOG_INTERVAL) -> None:
        self.sock = sock
        self.callback = callback
        self.pause = pause
        self.log_interval = log_interval
        self.failures = 0
        self._next_log = 0.0
        self._loop = IOLoop.current()
        self._listening = False
        self._resume_timer: object | None = None
        self._stopped = False

    def start(self) -> None:
        self._loop.add_handler(self.sock, self._ready, IOLoop.READ)
        self._listening = True

    def stop(self) -> None:
        self._stopped = True
        if self._resume_timer is not None:
            self._loop.remove_timeout(self._resume_timer)
            self._resume_timer = None
        if self._listening:
            self._loop.remove_handler(self.sock)
            self._listening = False

    def _ready(self, fd: Any, events: int) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            if not self._listening:
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:  # the client gave up while waiting
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM...
                self._back_off(exc)
                return
            self.callback(connection, address)

    def _back_off(self, exc: OSError) -> None:
        self.failures += 1
        now = time.monotonic()
        if now >= self._next_log:
            log.error("cannot accept connections on %s: %s; pausing accepts for %g s "
                      "(%d failures since the last report)", _name(self.sock), exc.strerror,
                      self.pause, self.failures)
            self.failures = 0
            self._next_log = now + self.log_interval
        self._loop.remove_handler(self.sock)
        self._listening = False
        self._resume_timer = self._loop.call_later(self.pause, self._resume)

    def _resume(self) -> None:
        self._resume_timer = None
        if not self._stopped:
            self.start()


class HTTPListener(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server with an :class:`Acceptor` on each listening socket, whose
    connections answer malformed requests with tsf's JSON errors."""

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
        http1.bound(stream)
        context = tornado.httpserver._HTTPRequestContext(stream, address, self.protocol,
                                                         self.trusted_downstream)
        connection = http1.Http1ServerConnection(stream, self.conn_params, context)
        self._connections.add(connection)
        connection.start_serving(self)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            acceptor = Acceptor(sock, self._handle_connection)
            acceptor.start()
            # TCPServer.stop() calls _handlers[fd]() and closes _sockets[fd]
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = acceptor.stop


def _name(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
        return f"{host}:{port}"
    except OSError:
        return "a listening socket"

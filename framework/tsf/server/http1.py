"""HTTP/1 connections that answer every malformed request with tsf's JSON error, then close.

Tornado answers a message it cannot parse with a bare ``400 Bad Request`` and no body, and one
whose header block, request line or chunk-size line passes its read limit (64 KiB for the
header block, 64 bytes for a chunk-size line) with nothing at all: its stream closes the
connection the moment the limit is passed ("Unsatisfiable read").  Here:

* :class:`BoundedReads` (mixed into the connection's stream) fails such a read with
  :class:`ReadLimitPassed` and leaves the connection open, so that it can be answered;
* :class:`Http1Connection` turns that, and Tornado's ``HTTPInputError``, into an answer:
  414 ``URITooLongException`` for a request line over the header limit, 431
  ``RequestHeaderFieldsTooLargeException`` for a header block over it, 400
  ``BadRequestException`` for the rest (a chunk-size line over 64 bytes or with an extension,
  a header without a colon, a bad request line, ``Content-Length`` or ``Transfer-Encoding``),
  each with ``Connection: close``; it then stops writing, reads and drops what the client was
  still sending for a moment (so that closing does not reset the connection before the client
  has read the answer), and closes;
* :class:`Http1ServerConnection` serves each request of a connection with one of these.

A well-formed request takes Tornado's own path; the only added step is the check of its
request line, which Tornado makes right after the headers without a way to answer it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from http import HTTPStatus
from typing import Any

from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection

from ..errors import BadRequest, HeadersTooLarge, TsfError, UriTooLong

log = logging.getLogger("tsf.http")

LINGER_SECONDS = 2.0  # how long a refused client may go on sending before the connection closes
LINGER_BYTES = 1 << 20


class ReadLimitPassed(Exception):
    """A delimited read passed its ``max_bytes`` (``limit``) without finding its delimiter;
    ``line_ended``: a line break came within the limit (the request line was whole)."""

    def __init__(self, limit: int, line_ended: bool) -> None:
        super().__init__(f"no delimiter within {limit} bytes")
        self.limit = limit
        self.line_ended = line_ended


class MalformedRequest(Exception):
    """A request that cannot be served, with the error to answer it with."""

    def __init__(self, error: TsfError) -> None:
        super().__init__(error.message)
        self.error = error


class BoundedReads:
    """Mixed into an ``IOStream``: a delimited read past its ``max_bytes`` fails with
    :class:`ReadLimitPassed` instead of closing the connection."""

    _read_buffer: bytearray
    _read_future: Any
    _read_max_bytes: int | None
    _read_failed = False

    def _find_read_pos(self) -> int | None:
        try:
            return super()._find_read_pos()  # type: ignore[misc]
        except iostream.UnsatisfiableReadError:
            limit = self._read_max_bytes or 0
            error = ReadLimitPassed(limit, self._read_buffer.find(b"\n", 0, limit) >= 0)
            future, self._read_future = self._read_future, None
            self._read_delimiter = self._read_regex = self._read_max_bytes = None
            self._read_failed = True
            if future is not None and not future.done():
                future.set_exception(error)
            return None

    def _read_to_buffer_loop(self) -> int | None:
        # Right after a read failed, Tornado reads on from the socket: an end of file there
        # (a client that stopped sending) would close the connection before it is answered.
        if self._read_failed:
            self._read_failed = False
            return None
        return super()._read_to_buffer_loop()  # type: ignore[misc]


class BoundedIOStream(BoundedReads, iostream.IOStream):
    pass


class BoundedSSLIOStream(BoundedReads, iostream.SSLIOStream):
    pass


def bound(stream: iostream.IOStream) -> None:
    """Give ``stream`` (just made by Tornado's TCP server, nothing read yet) bounded reads."""
    if not isinstance(stream, BoundedReads):
        ssl = isinstance(stream, iostream.SSLIOStream)
        stream.__class__ = BoundedSSLIOStream if ssl else BoundedIOStream


class Http1Connection(HTTP1Connection):
    """One request of a connection: Tornado's reading and writing, tsf's answers to requests
    that are not well formed."""

    async def _read_message(self, delegate: httputil.HTTPMessageDelegate) -> bool:
        try:
            return await super()._read_message(delegate)
        except ReadLimitPassed as exc:
            error: TsfError = self._over_limit(exc)
        except MalformedRequest as exc:
            error = exc.error
        await self._refuse(error)
        return False

    def _over_limit(self, exc: ReadLimitPassed) -> TsfError:
        if self._request_start_line is not None:  # the headers were read: a chunk-size line
            return BadRequest(f"malformed chunked body: a chunk-size line longer than "
                              f"{exc.limit} bytes (chunk extensions are not accepted)")
        if exc.line_ended:
            return HeadersTooLarge(f"the request's header block is larger than {exc.limit} "
                                   f"bytes ({exc.limit // 1024} KiB)")
        return UriTooLong(f"the request line (method, URL and version) is longer than "
                          f"{exc.limit} bytes ({exc.limit // 1024} KiB); send long inputs "
                          "in the body")

    def _parse_headers(self, data: bytes) -> tuple[str, httputil.HTTPHeaders]:
        try:
            start_line, headers = super()._parse_headers(data)
        except httputil.HTTPInputError as exc:
            raise MalformedRequest(BadRequest(f"malformed header: {exc}")) from None
        try:
            httputil.parse_request_start_line(start_line)
        except httputil.HTTPInputError as exc:
            raise MalformedRequest(BadRequest(f"malformed request line: {exc}")) from None
        return start_line, headers

    def _can_keep_alive(self, start_line: Any, headers: httputil.HTTPHeaders) -> bool:
        try:
            return super()._can_keep_alive(start_line, headers)
        except httputil.HTTPInputError as exc:  # an HTTP/1.0 request's Transfer-Encoding
            raise MalformedRequest(BadRequest(f"malformed body framing: {exc}")) from None

    def _read_body(self, code: int, headers: httputil.HTTPHeaders,
                   delegate: httputil.HTTPMessageDelegate) -> Any:
        try:
            return super()._read_body(code, headers, delegate)
        except httputil.HTTPInputError as exc:
            raise MalformedRequest(BadRequest(f"malformed body framing: {exc}")) from None

    async def _read_chunked_body(self, delegate: httputil.HTTPMessageDelegate) -> None:
        try:
            await super()._read_chunked_body(delegate)
        except httputil.HTTPInputError as exc:
            raise MalformedRequest(BadRequest(
                f"malformed chunked body: {exc} (chunk extensions are not accepted)")) from None

    async def _refuse(self, error: TsfError) -> None:
        """Answer ``error`` (unless an answer was begun), then close the connection."""
        stream = self.stream
        if stream is None or stream.closed():
            return
        log.info("refused a malformed request from %s: %d %s", self.context, error.status,
                 error.message)
        try:
            if self._response_start_line is None:
                await stream.write(_answer(error))
            await _linger(stream)
        except iostream.StreamClosedError:
            pass
        finally:
            self.close()


def _answer(error: TsfError) -> bytes:
    body = json.dumps(error.to_dict()).encode()
    reason = HTTPStatus(error.status).phrase
    head = (f"HTTP/1.1 {error.status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


async def _linger(stream: iostream.IOStream) -> None:
    """Stop writing, then read and drop the client's bytes until it closes, for at most
    ``LINGER_SECONDS`` and ``LINGER_BYTES``: closing with unread bytes would reset the
    connection, and the client could lose the answer."""
    try:
        stream.socket.shutdown(socket.SHUT_WR)
    except OSError:
        return
    deadline, dropped = time.monotonic() + LINGER_SECONDS, 0
    while dropped < LINGER_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            dropped += len(await asyncio.wait_for(
                stream.read_bytes(LINGER_BYTES, partial=True), remaining))
        except TimeoutError:
            return


class Http1ServerConnection(HTTP1ServerConnection):
    """A server connection whose requests are read by :class:`Http1Connection`."""

    async def _server_request_loop(self, delegate: httputil.HTTPServerConnectionDelegate
                                   ) -> None:
        try:
            while True:
                conn = Http1Connection(self.stream, False, self.params, self.context)
                request_delegate = delegate.start_request(self, conn)
                try:
                    open_after = await conn.read_response(request_delegate)
                except (iostream.StreamClosedError, iostream.UnsatisfiableReadError,
                        asyncio.CancelledError):
                    return
                except Exception:
                    log.exception("uncaught error on the connection from %s", self.context)
                    conn.close()
                    return
                if not open_after:
                    return
                await asyncio.sleep(0)
        finally:
            delegate.on_close(self)

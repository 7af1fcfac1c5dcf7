"""Framing between the front end and a worker over a Unix domain socket.

A frame is::

    kind (1 byte) | header length (4 bytes, big endian) | blobs length (4 bytes) | header | blobs

The header is a small JSON object; ``header["blobs"]`` lists the sizes of the binary blobs that
follow it back to back.  Request bodies and response payloads travel as blobs, as they are: they
are never JSON- or base64-encoded.  The headers of BATCH, RESULT and PARTIAL frames are the
messages of :mod:`tsf.workers.messages`, whose docstring gives their schema.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Sequence

PREFIX = struct.Struct("!BII")
MAX_HEADER = 64 * 1024 * 1024
MAX_BLOBS = (1 << 32) - 1

READY = 1        # worker -> front end: model loaded; header has pid, device and the handler's
                 # OIP signature (if it declares one)
LOAD_ERROR = 2   # worker -> front end: model failed to load; header has error
BATCH = 3        # front end -> worker: a batch of requests
RESULT = 4       # worker -> front end: one result per request, timings, metrics
PARTIAL = 5      # worker -> front end, before RESULT: one intermediate answer of one request;
                 # header has index (in the batch), status, ctype, headers; one blob
CANCEL = 6       # front end -> worker: do not run request ``index`` of the batch numbered
                 # ``batch`` (counted from 0 in the order sent), whose client went away or whose
                 # time ran out; the worker skips it if it has not begun that batch, and answers
                 # it with ClientGone
STATS = 7        # worker -> front end, engine mode: the engine's load (tsf.generation.engine.
                 # EngineStats.to_wire), every half second while it has work
PROFILE = 8      # front end -> worker: record the next batches with the profilers; header is a
                 # tsf.workers.messages.ProfileOrder
SPEC = 10        # front end -> worker, first frame: the model to serve and the worker's settings


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(kind: int, header: dict, blobs: Sequence[bytes] = ()) -> list[bytes]:
    """The frame as a list of buffers (write them in order; no concatenation needed)."""
    sizes = [len(b) for b in blobs]
    head = json.dumps({**header, "blobs": sizes}, separators=(",", ":")).encode()
    total = sum(sizes)
    if total > MAX_BLOBS:
        raise ProtocolError(f"frame payload of {total} bytes is too large")
    return [PREFIX.pack(kind, len(head), total), head, *blobs]


def decode(head: bytes, payload: bytes | memoryview) -> tuple[dict, list[bytes]]:
    header = json.loads(head)
    view = memoryview(payload)
    blobs, offset = [], 0
    for size in header.get("blobs", ()):
        blobs.append(bytes(view[offset:offset + size]))
        offset += size
    if offset != len(view):
        raise ProtocolError("blob sizes do not add up to the frame length")
    return header, blobs


def _check_prefix(data: bytes) -> tuple[int, int, int]:
    kind, head_len, body_len = PREFIX.unpack(data)
    if head_len > MAX_HEADER:
        raise ProtocolError(f"frame header of {head_len} bytes is too large")
    return kind, head_len, body_len


# --- blocking side (worker) ---------------------------------------------------------------------

def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise EOFError("peer closed the socket")
        got += n
    return buf


def recv_frame(sock: socket.socket) -> tuple[int, dict, list[bytes]]:
    kind, head_len, body_len = _check_prefix(bytes(_recv_exact(sock, PREFIX.size)))
    data = _recv_exact(sock, head_len + body_len)
    header, blobs = decode(bytes(data[:head_len]), memoryview(data)[head_len:])
    return kind, header, blobs


def send_frame(sock: socket.socket, kind: int, header: dict, blobs: Sequence[bytes] = ()) -> None:
    sock.sendall(b"".join(encode(kind, header, blobs)))


# --- asyncio side (front end) -------------------------------------------------------------------

async def read_frame(reader: asyncio.StreamReader) -> tuple[int, dict, list[bytes]]:
    try:
        prefix = await reader.readexactly(PREFIX.size)
        kind, head_len, body_len = _check_prefix(prefix)
        data = await reader.readexactly(head_len + body_len)
    except asyncio.IncompleteReadError:
        raise EOFError("worker closed the socket") from None
    header, blobs = decode(data[:head_len], memoryview(data)[head_len:])
    return kind, header, blobs


def write_frame(writer: asyncio.StreamWriter, kind: int, header: dict,
                blobs: Sequence[bytes] = ()) -> None:
    writer.writelines(encode(kind, header, blobs))

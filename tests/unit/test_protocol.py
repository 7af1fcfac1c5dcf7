"""Worker framing over a real Unix socket pair."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from tsf.workers import protocol


def test_roundtrip_between_blocking_and_asyncio_ends():
    parent, child = socket.socketpair()
    blobs = [b"\x00\x01binary", b"", b"x" * 300_000]

    def worker():
        kind, header, got = protocol.recv_frame(child)
        protocol.send_frame(child, protocol.RESULT, {"echo": header["n"]}, list(reversed(got)))

    thread = threading.Thread(target=worker)
    thread.start()

    async def front():
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        protocol.write_frame(writer, protocol.BATCH, {"n": 7}, blobs)
        await writer.drain()
        result = await protocol.read_frame(reader)
        writer.close()
        return result

    kind, header, got = asyncio.run(front())
    thread.join()
    child.close()
    assert kind == protocol.RESULT and header["echo"] == 7
    assert got == list(reversed(blobs))


def test_blob_sizes_must_add_up():
    frame = protocol.encode(protocol.BATCH, {}, [b"abc"])
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(frame[1], b"abcdef")


def test_eof_is_reported():
    parent, child = socket.socketpair()
    parent.close()
    with pytest.raises(EOFError):
        protocol.recv_frame(child)

"""Streaming answers (``context.send_intermediate_predict_response``) over HTTP/1.1 chunked
transfer, as TorchServe 0.12 sends them, through a real server and a TorchServe-style handler."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from tsf.testing import ServerProcess


@pytest.fixture(scope="module")
def server(model_store, streaming_archive):
    server = ServerProcess(model_store=model_store)
    try:
        assert server.register(streaming_archive, batch_size=1).status_code == 200
        assert server.register(streaming_archive, model_name="streamer2", batch_size=2,
                               max_batch_delay=3000).status_code == 200
        yield server
    finally:
        server.stop()


def _read_stream(response: requests.Response) -> list[tuple[float, bytes]]:
    """Each HTTP chunk with the time it arrived."""
    return [(time.time(), chunk) for chunk in response.iter_content(chunk_size=None) if chunk]


def _post_stream(server, model: str, word: str) -> tuple[requests.Response,
                                                         list[tuple[float, bytes]]]:
    response = requests.post(f"{server.inference}/predictions/{model}", data=word.encode(),
                             headers={"Content-Type": "text/plain"}, stream=True, timeout=60)
    return response, _read_stream(response)


def test_intermediate_answers_arrive_before_the_handler_finishes(server):
    response, chunks = _post_stream(server, "streamer", "alpha")
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert response.headers["ts_stream_next"] == "true"
    # the head is the first intermediate answer's: a str is text
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["X-Request-Id"]
    bodies = [body for _, body in chunks]
    assert bodies[:3] == [b"alpha 0|", b"alpha 1|", b"alpha 2|"]
    assert len(bodies) == 4
    final = json.loads(bodies[3])
    assert final["word"] == "alpha" and final["batch"] == 1
    arrivals = [at for at, _ in chunks]
    # the handler sleeps 0.6 s after each intermediate answer before it returns the final one
    assert arrivals[0] < final["done"] - 1.0, (arrivals, final["done"])
    assert arrivals[1] < final["done"] - 0.4, (arrivals, final["done"])
    assert arrivals == sorted(arrivals)


def test_chunk_framing_on_the_wire(server):
    """A raw HTTP/1.1 client sees TorchServe's framing: one chunk per answer, then 0."""
    address = urlparse(server.inference)
    with socket.create_connection((address.hostname, address.port), timeout=60) as sock:
        sock.sendall(b"POST /predictions/streamer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nbeta")
        data = b""
        while not data.endswith(b"\r\n0\r\n\r\n"):
            more = sock.recv(65536)
            assert more, data
            data += more
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nTransfer-Encoding: chunked" in head
    assert body.startswith(b"7\r\nbeta 0|\r\n7\r\nbeta 1|\r\n7\r\nbeta 2|\r\n")
    size, final = body[len(b"7\r\nbeta 0|\r\n") * 3:].split(b"\r\n")[:2]
    assert int(size, 16) == len(final) and json.loads(final)["word"] == "beta"


def test_batch_of_two_streams_each_gets_only_its_own_chunks(server):
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda w: _post_stream(server, "streamer2", w), ["one", "two"]))
    for word, (response, chunks) in zip(["one", "two"], results):
        assert response.status_code == 200
        bodies = [body for _, body in chunks]
        assert bodies[:3] == [f"{word} {step}|".encode() for step in range(3)], bodies
        final = json.loads(bodies[3])
        assert final["word"] == word and final["batch"] == 2  # they shared the batch
        assert len(bodies) == 4


def test_a_client_that_leaves_mid_stream_does_not_break_the_worker(server):
    pids = set(server.worker_pids())
    response = requests.post(f"{server.inference}/predictions/streamer", data=b"gone",
                             headers={"Content-Type": "text/plain"}, stream=True, timeout=60)
    first = next(response.iter_content(chunk_size=None))
    assert first == b"gone 0|"
    response.close()  # the handler still has two answers and the final one to send
    time.sleep(2.5)
    again, chunks = _post_stream(server, "streamer", "back")
    assert again.status_code == 200
    assert [body for _, body in chunks][:3] == [b"back 0|", b"back 1|", b"back 2|"]
    assert set(server.worker_pids()) == pids


def test_a_failure_after_streaming_ends_the_stream_with_the_error(server):
    response, chunks = _post_stream(server, "streamer", "fail")
    assert response.status_code == 200  # the head went out with the first chunk
    bodies = [body for _, body in chunks]
    assert bodies[:3] == [b"fail 0|", b"fail 1|", b"fail 2|"]
    error = json.loads(b"".join(bodies[3:]))
    assert error["code"] == 500 and "failed after streaming on purpose" in error["message"]


def test_a_handler_that_streams_nothing_answers_plainly(server, model_store):
    assert server.register("echo.mar").status_code == 200
    try:
        response = requests.post(f"{server.inference}/predictions/echo", json=[1, 2],
                                 timeout=60)
        assert response.status_code == 200
        assert "Transfer-Encoding" not in response.headers
        assert int(response.headers["Content-Length"]) == len(response.content)
        assert "ts_stream_next" not in response.headers
    finally:
        server.manage("DELETE", "/models/echo")

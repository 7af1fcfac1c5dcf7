"""Request bodies against a real server: refused before they are read, cut when they stall.

Large bodies (sent whole, as a client would, on a raw socket) to unknown routes, to routes that
take no body, over ``max_request_size`` or without a token get a prompt JSON error; the server
closes the connection instead of reading on, and its memory does not grow by the body's size.
A body that stalls gets 408 after ``body_idle_timeout``.  When file descriptors run out, the
server backs off instead of spinning.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import psutil
import pytest

from tsf.testing import ServerProcess, exchange_raw

BIG = 100 * 1024 * 1024
PIECE = 1024 * 1024
LIMIT = 100_000


class RawExchange:
    """One request on a raw socket: the body is sent while the answer is read in a thread."""

    def __init__(self, base: str, method: str, path: str, headers: dict[str, str]) -> None:
        url = urlsplit(base)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=60)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.received = b""
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.sent = 0

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.received += data
        except OSError:
            pass
        self.closed.set()

    def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        return True

    def _complete(self) -> bool:
        head, sep, body = self.received.partition(b"\r\n\r\n")
        length = [line.split(b":")[1] for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:")]
        return bool(sep and length and len(body) >= int(length[0]))

    def answer(self, timeout: float = 60.0) -> tuple[int, dict]:
        deadline = time.monotonic() + timeout
        while not self.closed.is_set() and not self._complete():
            assert time.monotonic() < deadline, f"no answer; got {self.received[:200]!r}"
            time.sleep(0.05)
        self.sock.close()
        head, _, body = self.received.partition(b"\r\n\r\n")
        assert head, "the server closed the connection without an answer"
        return int(head.split()[1]), json.loads(body)


def send_big(base: str, method: str, path: str, chunked: bool,
             headers: dict[str, str] | None = None, total: int = BIG) -> RawExchange:
    """Send ``total`` bytes of body (or until the server closes); return the exchange."""
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(total)}
    exchange = RawExchange(base, method, path,
                           {"Content-Type": "application/octet-stream", **framing,
                            **(headers or {})})
    piece = b"x" * PIECE
    framed = b"%x\r\n" % PIECE + piece + b"\r\n" if chunked else piece
    while exchange.sent < total and exchange.send(framed):
        pass
    if exchange.sent >= total and chunked:
        exchange.send(b"0\r\n\r\n")
    return exchange


def rss(server: ServerProcess) -> int:
    return psutil.Process(server.proc.pid).memory_info().rss


def assert_refused_early(server: ServerProcess, exchange: RawExchange, before: int,
                         code: int, error_type: str) -> None:
    status, body = exchange.answer()
    assert (status, body["code"], body["type"]) == (code, code, error_type), body
    assert set(body) >= {"code", "type", "message"}
    assert exchange.sent < BIG, "the server read the whole body instead of closing"
    grown = rss(server) - before
    assert grown < BIG // 4, f"front end grew by {grown} bytes"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    (tmp / "keys.json").write_text(json.dumps({"management": {"key": "m-secret"},
                                               "inference": {"key": "i-secret"}}))
    server = ServerProcess(config={"max_request_size": LIMIT, "body_idle_timeout": 2,
                                   "auth_token_file": str(tmp / "keys.json")})
    yield server
    server.stop()


AUTH = {"Authorization": "Bearer i-secret"}
MANAGE = {"Authorization": "Bearer m-secret"}


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("api, path", [("inference", "/no/such/route"),
                                       ("management", "/no/such/route"),
                                       ("metrics", "/no/such/route")])
def test_big_body_to_an_unknown_route_is_404_before_it_is_read(server, api, path, chunked):
    before = rss(server)
    exchange = send_big(server.urls[api], "POST", path, chunked, AUTH)
    assert_refused_early(server, exchange, before, 404, "ResourceNotFoundException")
    assert server.get("/ping").status_code == 200


@pytest.mark.parametrize("api, path, headers", [("inference", "/predictions/any", AUTH),
                                                ("management", "/models", MANAGE)])
def test_big_chunked_body_to_a_known_route_is_413_at_the_limit(server, api, path, headers):
    before = rss(server)
    exchange = send_big(server.urls[api], "POST", path, True, headers)
    assert_refused_early(server, exchange, before, 413, "RequestEntityTooLargeException")


@pytest.mark.parametrize("api, path", [("inference", "/ping"), ("metrics", "/metrics"),
                                       ("management", "/plugins")])
def test_big_body_to_a_route_without_that_method_is_405_before_it_is_read(server, api, path):
    before = rss(server)
    exchange = send_big(server.urls[api], "POST", path, True, MANAGE if api == "management"
                        else AUTH)
    assert_refused_early(server, exchange, before, 405, "MethodNotAllowedException")


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("api, path", [("inference", "/predictions/any"),
                                       ("management", "/models")])
def test_unauthorised_big_body_is_401_before_it_is_read(server, api, path, chunked):
    before = rss(server)
    exchange = send_big(server.urls[api], "POST", path, chunked)
    assert_refused_early(server, exchange, before, 401, "UnauthorizedException")


@pytest.mark.parametrize("api, path, headers", [("inference", "/ping", {}),
                                                ("metrics", "/metrics", {}),
                                                ("management", "/models", MANAGE)])
def test_big_body_to_a_route_that_takes_none_is_413_at_the_limit(server, api, path, headers):
    before = rss(server)
    exchange = send_big(server.urls[api], "GET", path, True, headers)
    assert_refused_early(server, exchange, before, 413, "RequestEntityTooLargeException")


def test_a_small_body_to_a_route_that_takes_none_is_dropped(server):
    exchange = RawExchange(server.inference, "GET", "/ping", {"Content-Length": "10"})
    exchange.send(b"x" * 10)
    status, body = exchange.answer()
    assert status == 200 and body["status"] == "Healthy", body


def test_a_stalled_body_to_a_route_that_takes_none_is_408(server):
    exchange = RawExchange(server.inference, "GET", "/ping", {"Content-Length": "1000"})
    exchange.send(b"x" * 10)
    status, body = exchange.answer(timeout=30)
    assert (status, body["type"]) == (408, "RequestTimeoutException"), body


def _stalled(server: ServerProcess, framing: dict[str, str], first: bytes) -> RawExchange:
    exchange = RawExchange(server.inference, "POST", "/predictions/any",
                           {"Content-Type": "application/octet-stream", **framing, **AUTH})
    exchange.send(first)
    return exchange


@pytest.mark.parametrize("framing, first", [
    ({"Content-Length": "1000"}, b"x" * 10),
    ({"Transfer-Encoding": "chunked"}, b"a\r\n" + b"x" * 10 + b"\r\n"),
])
def test_a_stalled_body_is_408_after_body_idle_timeout(server, framing, first):
    start = time.monotonic()
    exchange = _stalled(server, framing, first)
    status, body = exchange.answer(timeout=30)
    waited = time.monotonic() - start
    assert (status, body["type"]) == (408, "RequestTimeoutException"), body
    assert "body_idle_timeout" in body["message"]
    assert 1.5 < waited < 20, waited
    assert server.get("/ping").status_code == 200


def test_a_slow_body_that_keeps_coming_is_not_cut(server):
    exchange = _stalled(server, {"Content-Length": "5"}, b"x")
    for _ in range(4):  # 4 s in all, twice body_idle_timeout, never idle for 2 s
        time.sleep(1)
        exchange.send(b"x")
    status, body = exchange.answer(timeout=30)
    assert status == 404 and body["type"] == "ModelNotFoundException", body


# --- requests Tornado would close without a word ---------------------------------------------

def parsed(answer: bytes) -> tuple[int, dict[str, str], dict]:
    """Status, headers (lower-cased names) and JSON body of one HTTP answer."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 "), f"no HTTP answer: {answer[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    assert len(body) == int(headers["content-length"]), answer[:300]
    return int(lines[0].split()[1]), headers, json.loads(body)


CHUNKED_HEAD = (b"POST /predictions/any HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer i-secret\r\n"
                b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")


OVER_A_LIMIT = [
    # a chunk-size line with a 5,000-byte extension (Tornado reads at most 64 bytes of it)
    (CHUNKED_HEAD + b"5;ext=" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 400,
     "BadRequestException", "chunk"),
    # a header block over 64 KiB: one long header, or many short ones
    (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 70_000 + b"\r\n\r\n", 431,
     "RequestHeaderFieldsTooLargeException", "64 KiB"),
    (b"GET /ping HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40)
                                          for i in range(2000)) + b"\r\n", 431,
     "RequestHeaderFieldsTooLargeException", "64 KiB"),
    # a request line (its query) over 64 KiB
    (b"GET /ping?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
     "URITooLongException", "64 KiB"),
]
NOT_HTTP = [
    # what Tornado answered with a bare 400: a chunk extension, a header without a colon, a
    # bad request line, a body framing it cannot read
    (CHUNKED_HEAD + b"5;name=value\r\nhello\r\n0\r\n\r\n", 400, "BadRequestException",
     "chunk"),
    (b"GET /ping HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400, "BadRequestException",
     "header"),
    (b"GET /ping HTTP/9.9\r\nHost: x\r\n\r\n", 400, "BadRequestException", "request line"),
    (b"GET /ping HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
     "BadRequestException", "framing"),
    (b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nx", 400,
     "BadRequestException", "framing"),
]


@pytest.mark.parametrize("request_bytes, code, error_type, words",
                         OVER_A_LIMIT + NOT_HTTP)
def test_malformed_requests_get_a_json_error_then_the_connection_closes(
        server, request_bytes, code, error_type, words):
    started = time.monotonic()
    status, headers, body = parsed(exchange_raw(server.inference, request_bytes))
    assert (status, body["code"], body["type"]) == (code, code, error_type), body
    assert words in body["message"], body
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    assert time.monotonic() - started < 10  # answered at once, not after a timeout
    assert server.get("/ping").status_code == 200


@pytest.mark.parametrize("request_bytes, code, error_type, words", OVER_A_LIMIT)
def test_a_client_that_stops_sending_after_a_request_over_a_limit_is_answered(
        server, request_bytes, code, error_type, words):
    # as ``nc -N`` does.  (tsf, like Tornado, takes the end of a client's input as the client
    # leaving once it has read a whole request and nothing waits behind it, so a bodiless
    # request followed by a half-close is not answered, malformed or not.)
    status, _, body = parsed(exchange_raw(server.inference, request_bytes, half_close=True))
    assert (status, body["type"]) == (code, error_type), body


@pytest.mark.slow
def test_running_out_of_file_descriptors_does_not_spin_or_flood_the_log(tmp_path):
    server = ServerProcess()
    try:
        process = psutil.Process(server.proc.pid)
        soft, hard = process.rlimit(psutil.RLIMIT_NOFILE)
        process.rlimit(psutil.RLIMIT_NOFILE, (process.num_fds() + 2, hard))
        clients = []
        cpu_before = sum(process.cpu_times()[:2])
        lines_before = server.log().count("\n")
        try:
            for _ in range(20):
                clients.append(socket.create_connection(
                    (urlsplit(server.inference).hostname, urlsplit(server.inference).port),
                    timeout=5))
            time.sleep(4)
            cpu = sum(process.cpu_times()[:2]) - cpu_before
            new_lines = server.log().count("\n") - lines_before
        finally:
            process.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))
            for client in clients:
                client.close()
        assert new_lines < 20, server.log()[-3000:]
        assert cpu < 0.5, f"the front end used {cpu:.1f} s of CPU in 4 s"
        assert "cannot accept connections" in server.log()
        deadline = time.monotonic() + 10
        while server.get("/ping", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        server.stop()

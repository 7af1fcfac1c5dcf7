"""The worker's loop in engine mode (``asyncCommunication``): requests in as they come, answers
out as they finish.

The front end sends each request as soon as it is queued, as a BATCH of one (the batch numbers
count the BATCH frames sent).  This loop hands each to the engine at once, whatever the engine
is computing; the engine streams a request's text back as PARTIAL frames and ends it with a
RESULT frame, each carrying the request's batch number, in whatever order requests finish.  A
CANCEL frame (the client left) stops that request at the engine's next step.  While the engine
has work, a STATS frame reports its load every :data:`STATS_INTERVAL` seconds (running and
waiting sequences, cache use, sequences per decode step).

A body the engine cannot take is answered with its error at once; the loop never dies of
input.  It returns when the front end closes the socket.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

from ..errors import BadRequest, NotImplementedByModel, TsfError
from ..generation.engine import Engine, Outbox
from ..generation.request import parse_request
from ..json_body import load_json
from ..workers import protocol
from ..workers.messages import DESCRIBE, PREDICT, Answer, Batch, Request

STATS_INTERVAL = 0.5


class SocketOutbox(Outbox):
    """Frames for the front end, written once per engine step (thread safe)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._pending: list[bytes] = []

    def text(self, key: Any, choice: int, text: str) -> None:
        body = json.dumps({"c": choice, "t": text}).encode()
        self._add(protocol.PARTIAL, {"status": 200, "ctype": "application/json",
                                     "index": key[1], "batch": key[0]}, [body])

    def done(self, key: Any, answer: dict) -> None:
        self._result(key, Answer(200, "application/json", json.dumps(answer).encode()))

    def failed(self, key: Any, error: TsfError) -> None:
        self._result(key, Answer(error.status, "application/json",
                                 json.dumps(error.to_dict()).encode(), error=True))

    def _result(self, key: Any, answer: Answer) -> None:
        blobs: list[bytes] = []
        header = {"results": [answer.wire_into(blobs)], "batch": key[0], "index": key[1],
                  "timings": {}, "metrics": []}
        self._add(protocol.RESULT, header, blobs)

    def stats(self, header: dict) -> None:
        self._add(protocol.STATS, header, [])
        self.flush()

    def _add(self, kind: int, header: dict, blobs: list[bytes]) -> None:
        frame = b"".join(protocol.encode(kind, header, blobs))
        with self._lock:
            self._pending.append(frame)

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            data, self._pending = b"".join(self._pending), []
            try:
                self.sock.sendall(data)
            except OSError:  # the front end is gone; the reader sees EOF and ends the loop
                pass


def serve_engine(sock: socket.socket, engine: Engine) -> int:
    """Serve requests with ``engine`` until the socket closes."""
    outbox = SocketOutbox(sock)
    engine.start(outbox)
    stop = threading.Event()
    reporter = threading.Thread(target=_report, args=(engine, outbox, stop),
                                name="tsf-engine-stats", daemon=True)
    reporter.start()
    try:
        while True:
            try:
                kind, header, blobs = protocol.recv_frame(sock)
            except (EOFError, ConnectionError):
                return 0
            if kind == protocol.BATCH:
                batch = Batch.from_wire(header, blobs)
                number = int(header.get("number", 0))
                for index, request in enumerate(batch.requests):
                    _submit(engine, outbox, (number, index), request)
            elif kind == protocol.CANCEL:
                engine.cancel((int(header["batch"]), int(header["index"])))
    finally:
        stop.set()
        engine.close()


def _submit(engine: Engine, outbox: Outbox, key: tuple[int, int], request: Request) -> None:
    """Hand one request to the engine, or answer it at once if it cannot be run."""
    try:
        if request.kind == DESCRIBE:
            outbox.done(key, {})
            outbox.flush()
            return
        if request.kind != PREDICT:
            raise NotImplementedByModel("generative models cannot be explained")
        if not request.parts:
            raise BadRequest("the request has no body")
        document = load_json(request.parts[0].data or b"null", "body")
        engine.submit(key, parse_request(document))
    except TsfError as exc:
        outbox.failed(key, exc)
        outbox.flush()
    except Exception as exc:  # an engine that refuses input some other way fails that request
        outbox.failed(key, BadRequest(f"{type(exc).__name__}: {exc}"))
        outbox.flush()


def _report(engine: Engine, outbox: SocketOutbox, stop: threading.Event) -> None:
    """Send the engine's load while it has work (and once more when it has become idle)."""
    last: dict | None = None
    while not stop.wait(STATS_INTERVAL):
        try:
            stats = engine.stats().to_wire()
        except Exception:  # a failing report must not stop the serving
            continue
        if stats != last or stats["running"] or stats["waiting"]:
            outbox.stats(stats)
            last = stats

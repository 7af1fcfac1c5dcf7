"""Worker process entry point: ``python -m tsf.runtime.main --fd N --parent PID``.

The front end starts one such process per worker, handing it one end of a Unix socket pair.
The first frame on the socket (SPEC) describes the model to serve: settings travel on the socket,
not the command line, whose length is limited.  The worker builds its own plugin manager,
registers the model's handler into it, loads the model, runs the model's warm-up inputs (see
:mod:`tsf.runtime.warmup`), reports READY (or LOAD_ERROR), then
serves batches, one at a time in the order sent, until the socket closes; a request cancelled
(CANCEL frame) before its batch begins is not run.  A model served by a generation engine runs
:mod:`tsf.runtime.engine_loop` instead, which takes requests continuously.  The front end alone
decides when a worker stops: it ignores SIGINT (a Ctrl-C in a terminal reaches the whole process group), and a SIGTERM
(systemd and ``kill -- -PGID`` signal every process of the tree) is logged and otherwise
ignored, so the batches it was sent are still computed while the front end drains, and it
exits when the front end closes its socket (a batch that runs too long is bounded by the
response timeout: the front end kills the worker).  SIGTERM starts blocked (the front end
spawns it so) until the handler is in place.  It exits when the front end dies.  It runs with
``-X faulthandler``: a crash, even while Python starts, prints each thread's Python stack to
stderr, which the front end logs (and quotes if the worker was loading the model).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import select
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from ..context import Context, placement_requested
from ..errors import ModelLoadError, TsfError
from ..handler import FallbackHandler
from ..plugins import WORKER_BUILTINS, create_manager
from ..workers import protocol
from ..workers.messages import Answer, Batch, ProfileOrder
from . import lifeline
from .batch_runner import BatchRunner
from .engine_loop import serve_engine
from .handler_resolver import resolve_handler
from .profiler import BatchProfiler, startup_order
from .read_ahead import ReadAhead
from .warmup import run_warmup


def load(spec: dict, handler: Any = None) -> tuple[Any, Context]:
    """The worker's plugin manager and Context for ``spec``, with the model loaded.

    ``handler`` (an instance) replaces the one the spec names: the in-process test harness
    (:class:`tsf.testing.HandlerHarness`) uses it.
    """
    # torch (if the handler uses it) takes its thread count from OMP_NUM_THREADS, which the
    # front end sets to cores / workers.
    sys.path[:0] = [p for p in spec.get("python_path", []) if p not in sys.path]  # requirements
    context = Context(model_name=spec["model_name"], model_version=spec["model_version"],
                      model_dir=spec["model_dir"], manifest=spec["manifest"],
                      model_config=spec.get("model_config") or {},
                      batch_size=int(spec.get("batch_size", 1)), worker_id=spec["worker_id"],
                      worker_index=int(spec.get("worker_index", 0)))
    context.metrics.declare(spec.get("model_metrics") or [])
    if spec.get("sequence_headers"):
        (context.header_key_sequence_id, context.header_key_sequence_start,
         context.header_key_sequence_end) = spec["sequence_headers"]
    if placement_requested(context.model_config):
        context.device  # noqa: B018 - choose (and check) the GPU before the handler loads
    pm = create_manager(WORKER_BUILTINS)
    pm.register(FallbackHandler(), name="tsf.fallback")
    if handler is None:
        handler = resolve_handler(spec.get("handler", ""), spec["model_dir"], pm)
    pm.register(handler, name=f"handler:{spec['model_name']}")
    context.handler = handler
    model = pm.hook.tsf_load_model(context=context)
    if model is None:
        raise ModelLoadError("no handler or plugin loaded the model")
    context.model = model
    return pm, context


class RequestIdsFilter(logging.Filter):
    """Adds the ids of the batch being processed to log records (``-`` outside batches)."""

    context: Context | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        ids = self.context.request_ids.values() if self.context is not None else ()
        record.request_ids = ",".join(ids) or "-"
        return True


REQUEST_IDS = RequestIdsFilter()


def serve(sock: socket.socket, spec: dict) -> int:
    try:
        pm, context = load(spec)
        runner = BatchRunner(pm, context)
        if not spec.get("engine"):
            run_warmup(runner, context.model_config, spec["model_dir"])  # before READY
    except Exception as exc:
        traceback.print_exc()
        error = exc if isinstance(exc, TsfError) else ModelLoadError(f"{type(exc).__name__}: {exc}")
        protocol.send_frame(sock, protocol.LOAD_ERROR, {"error": error.to_dict()})
        return 1
    ready = {"pid": os.getpid(), "device": context.device_if_chosen}
    signature = getattr(context.handler, "signature", None)
    if isinstance(signature, dict):  # OIP model metadata a handler declares
        ready["signature"] = signature
    protocol.send_frame(sock, protocol.READY, ready)
    if spec.get("engine"):  # asyncCommunication: requests taken as they come (engine_loop)
        return serve_engine(sock, context.model)
    REQUEST_IDS.context = context
    sending = threading.Lock()  # a handler may stream from threads of its own

    def send_partial(answer: Answer) -> None:
        with sending:
            protocol.send_frame(sock, protocol.PARTIAL, *answer.to_wire())

    runner.send_partial = send_partial  # not during warm-up: nobody listens before READY
    inbox: Inbox | ReadAhead = Inbox(sock)
    if runner.preparer is not None:  # the handler prepares requests ahead (see read_ahead)
        inbox = ReadAhead(inbox, runner.prepare)
    profiler = BatchProfiler(runner, spec["worker_id"])
    profiler.arm([order for order in [startup_order(spec)] if order is not None])
    while True:
        try:
            _, batch, skip = inbox.next_batch()
        except (EOFError, ConnectionError):
            return 0
        profiler.arm(inbox.take_orders())
        result = profiler.run(batch, skip)
        with sending:
            protocol.send_frame(sock, protocol.RESULT, *result.to_wire())


class Inbox:
    """The frames the front end sent: batches in their order, and the cancellations of requests
    in batches not begun yet (the front end may send a batch while the one before it runs)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.batches: collections.deque[tuple[int, Batch]] = collections.deque()
        self.cancelled: set[tuple[int, int]] = set()  # (batch number, request index)
        self.received = 0
        self.orders: list[ProfileOrder] = []  # profile the next batches (tsf.runtime.profiler)

    def next_batch(self) -> tuple[int, Batch, set[int]]:
        """The next batch to run, its number, and the indexes of its requests to skip."""
        if not self.batches:
            self._take(*protocol.recv_frame(self.sock))
        while select.select([self.sock], [], [], 0)[0]:  # whatever else already arrived
            self._take(*protocol.recv_frame(self.sock))
        while not self.batches:
            self._take(*protocol.recv_frame(self.sock))
        return self.pop_batch()

    def take_orders(self) -> list[ProfileOrder]:
        """The profile orders received since the last call."""
        orders, self.orders = self.orders, []
        return orders

    def pop_batch(self) -> tuple[int, Batch, set[int]]:
        """The first batch received and not run yet, with the indexes of its requests to skip."""
        number, batch = self.batches.popleft()
        skip = {index for n, index in self.cancelled if n == number}
        self.cancelled = {c for c in self.cancelled if c[0] > number}
        return number, batch, skip

    def _take(self, kind: int, header: dict, blobs: list[bytes]) -> None:
        if kind == protocol.BATCH:
            self.batches.append((self.received, Batch.from_wire(header, blobs)))
            self.received += 1
        elif kind == protocol.CANCEL:
            self.cancelled.add((int(header["batch"]), int(header["index"])))
        elif kind == protocol.PROFILE:
            self.orders.append(ProfileOrder.from_wire(header))
        else:
            print(f"unexpected frame kind {kind}", file=sys.stderr)


def receive_spec(sock: socket.socket) -> dict:
    """The model to serve, from the front end's first frame."""
    kind, spec, _ = protocol.recv_frame(sock)
    if kind != protocol.SPEC:
        raise protocol.ProtocolError(f"expected the SPEC frame first, got kind {kind}")
    spec.pop("blobs", None)
    return spec


SIGTERM_NOTE = (b"WARNING tsf.worker [-] SIGTERM received: the front end decides when this "
                b"worker stops; it keeps computing the batches it is sent until then\n")


def _on_sigterm(signum: int, frame: Any) -> None:
    os.write(2, SIGTERM_NOTE)  # not logging: the main thread may hold a handler's lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tsf-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True, help="pid of the front end")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a handler, not SIG_IGN: an ignored signal stays ignored in the handler's own children
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    sock = socket.socket(fileno=args.fd)
    lifeline.hold(sock, args.parent)
    try:
        spec = receive_spec(sock)
    except (EOFError, ConnectionError):
        return 0
    # the front end reads each line's level from its first word (see tsf.workers.output)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s [%(request_ids)s] %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(REQUEST_IDS)
    try:
        return serve(sock, spec)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())

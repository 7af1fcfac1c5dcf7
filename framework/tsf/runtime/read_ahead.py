"""Reading batches ahead in a worker, so a handler prepares batch N+1 while batch N runs.

A handler opts in by defining ``prepare_request(request, request_id)``: a function of one
decoded request alone (it must not touch the Context, which belongs to the batch running), safe
to call from several threads at once.  The image handlers decode and resize their image there.
For such a handler the worker reads its socket in a thread of its own (:class:`ReadAhead`
instead of :class:`tsf.runtime.main.Inbox`'s reads between batches): as soon as a batch
arrives, each of its requests goes to a small pool of threads (``prepare_threads`` of the
handler, else the worker's torch threads), while the main thread still computes the batch
before it.  When the batch's turn comes, the handler finds the results in
``context.batch_state[tsf.handler.PREPARED]``, one future per request, and the batch's images
are ready or nearly so.  Decoders such as libjpeg-turbo and torch's resize release the GIL, so
the threads run beside the model.  Handlers without ``prepare_request`` keep the plain inbox.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from ..workers import protocol
from ..workers.messages import Batch


def prepare_hook(handler: Any) -> Callable[[dict, str], Any] | None:
    """The handler's ``prepare_request`` when it has one (and wants it: a subclass may turn it
    off with ``prepare_request = None``)."""
    hook = getattr(handler, "prepare_request", None)
    return hook if callable(hook) else None


def prepare_threads(handler: Any) -> int:
    """How many threads prepare requests: the handler's ``prepare_threads``, else the worker's
    torch threads (``OMP_NUM_THREADS``, which the front end sets from
    ``number_of_threads_per_worker``), at least 1."""
    wanted = getattr(handler, "prepare_threads", None)
    if not wanted:
        try:
            wanted = int(os.environ.get("OMP_NUM_THREADS", "1"))
        except ValueError:
            wanted = 1
    return max(1, int(wanted))


class Preparer:
    """Runs ``prepare_request`` for the requests of a batch in a pool of threads, adding up
    the seconds its threads spend (``busy``, which the profiler reports)."""

    def __init__(self, hook: Callable[[dict, str], Any], threads: int) -> None:
        self.hook = hook
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="tsf-prepare")
        self.busy = 0.0
        self._lock = threading.Lock()

    def submit(self, request: dict, request_id: str) -> Future:
        return self.pool.submit(self._timed, request, request_id)

    def _timed(self, request: dict, request_id: str) -> Any:
        start = time.perf_counter()
        try:
            return self.hook(request, request_id)
        finally:
            with self._lock:
                self.busy += time.perf_counter() - start


class ReadAhead:
    """The worker's inbox read by a thread: batches in their order, cancellations, and
    ``on_batch`` called for each batch the moment it arrives (the runner starts preparing it).

    Same interface as :class:`tsf.runtime.main.Inbox`, whose bookkeeping it reuses."""

    def __init__(self, inbox: Any, on_batch: Callable[[Batch], None]) -> None:
        self.inbox = inbox
        self.on_batch = on_batch
        self.changed = threading.Condition()
        self.closed: BaseException | None = None
        self.thread = threading.Thread(target=self._read, name="tsf-read-ahead", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                frame = protocol.recv_frame(self.inbox.sock)
            except (EOFError, OSError, protocol.ProtocolError) as exc:
                with self.changed:
                    self.closed = exc
                    self.changed.notify_all()
                return
            with self.changed:
                before = self.inbox.received
                self.inbox._take(*frame)
                batch = self.inbox.batches[-1][1] if self.inbox.received > before else None
                self.changed.notify_all()
            if batch is not None:
                try:
                    self.on_batch(batch)
                except Exception:  # preparing is an optimisation: the batch runs regardless
                    pass

    def take_orders(self) -> list:
        """The profile orders received since the last call."""
        with self.changed:
            return self.inbox.take_orders()

    def next_batch(self) -> tuple[int, Batch, set[int]]:
        """The next batch to run, its number, and the indexes of its requests to skip."""
        with self.changed:
            while not self.inbox.batches:
                if self.closed is not None:
                    if isinstance(self.closed, protocol.ProtocolError):
                        raise self.closed
                    raise EOFError("the front end closed the socket")
                self.changed.wait()
            return self.inbox.pop_batch()

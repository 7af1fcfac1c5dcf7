"""Running one batch through the stage hooks inside a worker.

A batch of request messages comes in (see :mod:`tsf.workers.messages`); each request part is
decoded by its content type (JSON -> object, text -> str, anything else -> bytes).  Predictions
go preprocess -> inference -> postprocess, explanations through ``tsf_explain``, describe
requests (``?customized=true``) to the handler's ``describe_handle()``.  Stage times are
measured here and sent back.
If a batch of several requests fails, each request is retried alone so that one bad input fails
only itself.  Results are encoded once, here, as answer messages: bytes as they are, str as
UTF-8 text, anything else as JSON; so are the intermediate answers a streaming handler sends
while its batch runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
from concurrent.futures import Future
from typing import Any, Callable

import pluggy

from ..context import Context, PartialSink
from ..errors import (BadRequest, ClientGone, HandlerError, NotImplementedByModel, OutOfResources,
                      TsfError)
from ..handler import PREPARED
from ..json_body import load_json
from ..oip.tensors import PROTOCOL as OIP
from ..oip.tensors import (TENSOR_CTYPE, TENSORS_CTYPE, decode_tensor, default_output_name,
                           encode_outputs)
from ..workers.messages import PREDICT, Answer, Batch, BatchResult, Part, Request
from .handler_resolver import describe_hook
from .read_ahead import Preparer, prepare_hook, prepare_threads

log = logging.getLogger("tsf.worker")

try:  # orjson is much faster for large float lists; optional
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=_json_default,
                            option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def decode_part(part: Part) -> Any:
    """A request part as a handler receives it, decided by its content type (as TorchServe).

    OIP tensor parts become tensors (see :mod:`tsf.oip.tensors`).
    """
    ctype, data = part.ctype, part.data
    if ctype == TENSOR_CTYPE:
        return decode_tensor(part)
    media = ctype.split(";", 1)[0].strip().lower()
    if media == "application/json":
        return load_json(data, "body")
    if media.startswith("text/") or media == "application/x-www-form-urlencoded":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data
    return data


def _decode_request(message: Request) -> dict | Answer:
    """The request as handlers receive it (its parts by name), or the error answering it."""
    request: dict[str, Any] = {}
    try:
        for part in message.parts:
            request[part.name] = decode_part(part)
    except TsfError as exc:
        return error_result(type(exc)(f"request {message.id}: {exc.message}"))
    except Exception as exc:  # any failure to decode input fails that request alone
        return error_result(BadRequest(f"request {message.id}: cannot decode its input "
                                       f"({type(exc).__name__}: {exc})"))
    return request


def encode_result(value: Any, settings: dict) -> Answer:
    if isinstance(value, (bytes, bytearray, memoryview)):
        body, ctype = bytes(value), "application/octet-stream"
    elif isinstance(value, str):
        body, ctype = value.encode(), "text/plain; charset=utf-8"
    else:
        body, ctype = _dumps(value), "application/json"
    return Answer(settings["status"], settings["content_type"] or ctype, body,
                  settings["headers"])


def error_result(error: TsfError) -> Answer:
    return Answer(error.status, "application/json", json.dumps(error.to_dict()).encode(),
                  error=True)


class StageClock:
    """Seconds spent per stage (summed over retries) and, for tracing, wall-clock spans."""

    def __init__(self, stamps: bool) -> None:
        self.timings: dict[str, float] = {}
        self.stamps: list[tuple[str, int, int]] | None = [] if stamps else None
        self._wall0, self._perf0 = time.time_ns(), time.perf_counter()

    def add(self, stage: str, start: float, end: float) -> None:
        """Record a stage that ran from ``start`` to ``end`` (``time.perf_counter()`` values)."""
        self.timings[stage] = self.timings.get(stage, 0.0) + end - start
        if self.stamps is not None:
            self.stamps.append((stage, self._wall(start), self._wall(end)))

    def _wall(self, perf: float) -> int:
        return self._wall0 + int((perf - self._perf0) * 1e9)


# sends one intermediate answer (its index set) to the front end as a PARTIAL frame
PartialSender = Callable[[Answer], None]


class BatchRunner:
    """Runs batches for one model through the worker's plugin manager."""

    def __init__(self, pm: pluggy.PluginManager, context: Context,
                 send_partial: PartialSender | None = None) -> None:
        self.pm = pm
        self.context = context
        self.send_partial = send_partial
        hook = prepare_hook(context.handler)
        self.preparer = Preparer(hook, prepare_threads(context.handler)) if hook else None
        self._ahead: dict[int, tuple[list, dict[int, Future]]] = {}  # by id() of the batch
        self._ahead_lock = threading.Lock()
        self._prepared: dict[int, Future] = {}  # the running batch's, by request index
        self._group: list[int] = []  # the batch indexes of the requests being run together
        # names each stage for a profiler while one records (tsf.runtime.profiler)
        self.annotate: Callable[[str], Any] | None = None

    def run(self, batch: Batch, skip: frozenset[int] | set[int] = frozenset()) -> BatchResult:
        """Run ``batch``; the requests at the positions in ``skip`` (whose clients have gone)
        are not run, and answered with ClientGone."""
        messages = batch.requests
        with self._ahead_lock:
            ahead = self._ahead.pop(id(batch), None)
        inputs, self._prepared = ahead if ahead is not None else self._prepare(batch)
        answers: list[Answer | None] = [None] * len(messages)
        decoded: dict[str, list[tuple[int, dict]]] = {}
        for index, (message, request) in enumerate(zip(messages, inputs)):
            if index in skip:
                answers[index] = error_result(ClientGone(
                    f"request {message.id}: the client went away before it was run"))
            elif isinstance(request, Answer):
                answers[index] = request
            else:
                decoded.setdefault(message.kind, []).append((index, request))
        clock = StageClock(batch.stamps)
        try:
            for kind, items in decoded.items():
                for index, answer in self._run_group(kind, items, messages, clock):
                    answers[index] = answer
        finally:
            self._prepared = {}
        result = BatchResult(answers, clock.timings,  # type: ignore[arg-type]
                             self.context.metrics.drain(), clock.stamps)
        self.context.request_ids = {}  # log lines between batches belong to no request
        return result

    def prepare(self, batch: Batch) -> None:
        """Decode ``batch``'s requests and start the handler's ``prepare_request`` on each, in
        the preparer's threads (called by :class:`tsf.runtime.read_ahead.ReadAhead` as the
        batch arrives, while the one before it runs)."""
        prepared = self._prepare(batch)
        with self._ahead_lock:
            self._ahead[id(batch)] = prepared

    def _prepare(self, batch: Batch) -> tuple[list, dict[int, Future]]:
        inputs = [_decode_request(message) for message in batch.requests]
        futures: dict[int, Future] = {}
        if self.preparer is not None:
            for index, (message, request) in enumerate(zip(batch.requests, inputs)):
                if message.kind == PREDICT and not isinstance(request, Answer):
                    futures[index] = self.preparer.submit(request, message.id)
        return inputs, futures

    def _run_group(self, kind: str, items: list[tuple[int, dict]], messages: list[Request],
                   clock: StageClock) -> list[tuple[int, Answer]]:
        if self.send_partial is not None:
            self.context.partial_sink = self._partial_sink([i for i, _ in items])
        try:
            self._group = [i for i, _ in items]  # whose prepared results _stages hands over
            values = self._stages(kind, [r for _, r in items],
                                  [messages[i] for i, _ in items], clock)
            return [(index, self._encode(v, messages[index], j))
                    for j, ((index, _), v) in enumerate(zip(items, values))]
        except Exception as exc:
            if len(items) > 1:  # isolate the failing request(s)
                return [pair for item in items
                        for pair in self._run_group(kind, [item], messages, clock)]
            return [(items[0][0], error_result(self._as_error(exc)))]
        finally:
            self.context.partial_sink = None

    def _partial_sink(self, positions: list[int]) -> PartialSink:
        """Sends a handler's intermediate answer for its request ``idx`` of this group;
        ``positions`` maps the group's indexes to the batch's."""
        send = self.send_partial
        assert send is not None

        def sink(idx: int, request_id: str, value: Any, code: int) -> None:
            if not 0 <= idx < len(positions):
                raise IndexError(f"request index {idx} is not in this batch of "
                                 f"{len(positions)} requests")
            settings = dict(self.context.response_settings(idx))
            if settings["status"] == 200:
                settings["status"] = code
            answer = encode_result(value, settings)
            answer.index = positions[idx]
            send(answer)

        return sink

    def _encode(self, value: Any, message: Request, position: int) -> Answer:
        settings = self.context.response_settings(position)
        if message.protocol == OIP and settings["status"] < 400:
            tensors, body = encode_outputs(value, default_output_name(self.context))
            return Answer(200, TENSORS_CTYPE, body, tensors=tensors)
        return encode_result(value, settings)

    def _as_error(self, exc: Exception) -> TsfError:
        if isinstance(exc, TsfError):  # ts.utils.util.PredictionException is one
            return exc
        log.error("handler of %s failed:\n%s", self.context.model_name, traceback.format_exc())
        if _out_of_memory(exc):
            return OutOfResources(f"out of resources: {type(exc).__name__}: {exc}")
        return HandlerError(f"{type(exc).__name__}: {exc}")

    def _stages(self, kind: str, requests: list[dict], messages: list[Request],
                clock: StageClock) -> list:
        ctx, hook = self.context, self.pm.hook
        ctx.begin_batch([m.id for m in messages], [m.headers for m in messages],
                        [m.params for m in messages], [m.protocol for m in messages])
        if self._prepared and kind == PREDICT:
            ctx.batch_state[PREPARED] = [self._prepared.get(i) for i in self._group]
        start = time.perf_counter()
        if kind == "describe":
            hook = describe_hook(ctx.handler)
            value = hook() if hook is not None else None
            return [b"" if value is None else value] * len(requests)
        if kind == "explain":
            results = hook.tsf_explain(context=ctx, requests=requests)
            if results is None:
                raise NotImplementedByModel(_no_explainer_message(ctx))
            clock.add("explain", start, time.perf_counter())
        else:
            span = self.annotate or _no_span
            with span("preprocess"):
                batch = _answered(hook.tsf_preprocess(context=ctx, requests=requests),
                                  "tsf_preprocess")
            t1 = time.perf_counter()
            with span("inference"):
                outputs = _answered(hook.tsf_inference(context=ctx, batch=batch),
                                    "tsf_inference")
            t2 = time.perf_counter()
            with span("postprocess"):
                results = _answered(hook.tsf_postprocess(context=ctx, outputs=outputs),
                                    "tsf_postprocess")
            t3 = time.perf_counter()
            clock.add("preprocess", start, t1)
            clock.add("inference", t1, t2)
            clock.add("postprocess", t2, t3)
        if not isinstance(results, (list, tuple)) or len(results) != len(requests):
            got = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
            raise HandlerError(f"handler returned {got} results for a batch of {len(requests)} "
                               "requests; it must return a list with one result per request")
        return list(results)


def _no_span(name: str) -> contextlib.nullcontext:
    return contextlib.nullcontext()


def _out_of_memory(exc: Exception) -> bool:
    """Host MemoryError or CUDA out-of-memory (checked by name: the worker may lack torch)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or \
        "CUDA out of memory" in str(exc)


def _no_explainer_message(ctx: Context) -> str:
    handler = type(ctx.handler).__name__ if ctx.handler is not None else "its handler"
    task = getattr(ctx.handler, "task", None)
    if task:
        return (f"model {ctx.model_name} cannot be explained: no installed explainer handles "
                f"{task!r} models (pip install tsf-explain-captum), and {handler} does not "
                "implement tsf_explain")
    return (f"model {ctx.model_name} cannot be explained: {handler} declares no task an "
            "explainer knows and does not implement tsf_explain")


def _answered(value: Any, hook_name: str) -> Any:
    if value is None:
        raise HandlerError(f"no handler or plugin answered {hook_name} for this model")
    return value

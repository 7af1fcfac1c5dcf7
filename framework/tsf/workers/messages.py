"""The messages that cross the worker boundary, and their wire schema.

The front end sends a :class:`Batch` of :class:`Request` messages in a BATCH frame; the worker
answers with a :class:`BatchResult` (one :class:`Answer` per request) in a RESULT frame, and,
before it, with any number of PARTIAL frames, each one :class:`Answer` of a streaming handler.
What only the front end needs (the version label, the trace span, where partial answers go) is
kept on its ``tsf.batching.queue.Job``, never sent.

A frame is a JSON header and binary blobs (see :mod:`tsf.workers.protocol`, which adds the
header's ``blobs`` list of sizes).  The headers, keys in brackets present only when they differ
from their default::

    BATCH    {"requests": [request, ...], ["stamps": true]}
             blobs: every part's bytes, request after request, part after part
    request  {"id": str, "headers": {name: value}, "parts": [part, ...],
              ["params": {name: value}]        URL query parameters, last value wins
              ["kind": "explain"|"describe"]   default "predict"
              ["protocol": "oip"|"torchserve-grpc"]}   default "torchserve"
    part     {"name": str, "ctype": str,       the content type the worker decodes it by
              ["filename": str]                a multipart upload's file name
              ["datatype": str, "shape": [int, ...], "encoding": "raw"|"json"]}   OIP tensors

    RESULT   {"results": [answer, ...], "timings": {stage: seconds},
              "metrics": [record, ...]         the handler's metrics (tsf.runtime.handler_metrics)
              ["stamps": [[stage, start_ns, end_ns], ...]]}   when the batch asked for them
             blobs: each answer's body, in the order of the requests
    answer   {"status": int, "ctype": str, ["headers": {name: value}],
              ["error": true]                  the body is an error's to_dict() JSON
              ["tensors": [{"name", "datatype", "shape", "size"}, ...]]}  OIP outputs, whose
                                               bytes lie back to back in the body
    PARTIAL  answer + {"index": int}           the request's position in its batch; one blob
    PROFILE  {"batches": int, "directory": str}  record the next batches (tsf.runtime.profiler)

In engine mode (a model served by a generation engine, :mod:`tsf.runtime.engine_loop`) the
worker takes requests continuously and answers them out of order, so the frames name their
request::

    BATCH    as above, one request, + {"number": n}   n counts the BATCH frames sent
    PARTIAL  answer + {"index": 0, "batch": n}       more of request n's streamed answer
    RESULT   {"results": [answer], "batch": n, "index": 0, ...}   request n's final answer
    CANCEL   {"batch": n, "index": 0}                 stop request n at the next step
    STATS    {"running", "waiting", "cache_used", "cache_total", "steps": {size: count}}

Request bodies and answers travel as blobs, as they are: never JSON- or base64-encoded, and
never copied on their way through these classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import TsfError, from_dict

PREDICT, EXPLAIN, DESCRIBE = "predict", "explain", "describe"
TORCHSERVE = "torchserve"            # a request's protocol unless it says otherwise
TORCHSERVE_GRPC = "torchserve-grpc"  # TorchServe's gRPC Predictions (OIP's is tsf.oip.tensors)


@dataclass(slots=True)
class Part:
    """One named input of a request: its bytes and how the worker decodes them."""

    name: str
    data: bytes
    ctype: str = ""
    filename: str | None = None
    # an OIP tensor's (ctype tsf.oip.tensors.TENSOR_CTYPE)
    datatype: str | None = None
    shape: list[int] | None = None
    encoding: str | None = None

    def to_wire(self) -> dict:
        """The part's header entry (its bytes travel as a blob)."""
        wire: dict[str, Any] = {"name": self.name, "ctype": self.ctype}
        if self.filename is not None:
            wire["filename"] = self.filename
        if self.datatype is not None:
            wire.update(datatype=self.datatype, shape=self.shape, encoding=self.encoding)
        return wire

    @classmethod
    def from_wire(cls, wire: dict, data: bytes) -> "Part":
        return cls(wire["name"], data, wire.get("ctype", ""), wire.get("filename"),
                   wire.get("datatype"), wire.get("shape"), wire.get("encoding"))


@dataclass(slots=True)
class Request:
    """One request as a worker receives it."""

    id: str
    parts: list[Part]
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    kind: str = PREDICT
    protocol: str = TORCHSERVE

    def to_wire(self) -> tuple[dict, list[bytes]]:
        blobs: list[bytes] = []
        return self.wire_into(blobs), blobs

    def wire_into(self, blobs: list[bytes]) -> dict:
        """The request's header entry; its parts' bytes are appended to ``blobs``."""
        parts = []
        for part in self.parts:
            parts.append(part.to_wire())
            blobs.append(part.data)
        wire: dict[str, Any] = {"id": self.id, "headers": self.headers, "parts": parts}
        if self.params:
            wire["params"] = self.params
        if self.kind != PREDICT:
            wire["kind"] = self.kind
        if self.protocol != TORCHSERVE:
            wire["protocol"] = self.protocol
        return wire

    @classmethod
    def from_wire(cls, wire: dict, blobs: list[bytes]) -> "Request":
        parts = [Part.from_wire(part, data) for part, data in zip(wire["parts"], blobs)]
        return cls(wire["id"], parts, wire.get("headers") or {}, wire.get("params") or {},
                   wire.get("kind", PREDICT), wire.get("protocol", TORCHSERVE))


@dataclass(slots=True)
class Batch:
    """The requests one worker runs together; ``stamps`` asks for wall-clock stage times."""

    requests: list[Request]
    stamps: bool = False

    def to_wire(self) -> tuple[dict, list[bytes]]:
        blobs: list[bytes] = []
        header: dict[str, Any] = {"requests": [r.wire_into(blobs) for r in self.requests]}
        if self.stamps:
            header["stamps"] = True
        return header, blobs

    @classmethod
    def from_wire(cls, header: dict, blobs: list[bytes]) -> "Batch":
        requests, cursor = [], 0
        for wire in header["requests"]:
            count = len(wire["parts"])
            requests.append(Request.from_wire(wire, blobs[cursor:cursor + count]))
            cursor += count
        return cls(requests, bool(header.get("stamps")))


@dataclass(slots=True)
class Answer:
    """A worker's answer to one request (or, with ``index``, one intermediate answer)."""

    status: int
    ctype: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: bool = False  # the body is a TsfError's to_dict() JSON
    tensors: list[dict] | None = None  # OIP output descriptors
    index: int | None = None  # a partial answer's request, by its position in the batch

    def to_wire(self) -> tuple[dict, list[bytes]]:
        blobs: list[bytes] = []
        return self.wire_into(blobs), blobs

    def wire_into(self, blobs: list[bytes]) -> dict:
        """The answer's header entry; its body is appended to ``blobs``."""
        blobs.append(self.body)
        wire: dict[str, Any] = {"status": self.status, "ctype": self.ctype}
        if self.headers:
            wire["headers"] = self.headers
        if self.error:
            wire["error"] = True
        if self.tensors is not None:
            wire["tensors"] = self.tensors
        if self.index is not None:
            wire["index"] = self.index
        return wire

    @classmethod
    def from_wire(cls, wire: dict, blobs: list[bytes]) -> "Answer":
        return cls.with_body(wire, blobs[0] if blobs else b"")

    @classmethod
    def with_body(cls, wire: dict, body: bytes) -> "Answer":
        """The answer a header entry describes, with its body."""
        return cls(wire["status"], wire["ctype"], body, wire.get("headers") or {},
                   wire.get("error", False), wire.get("tensors"), wire.get("index"))

    def raise_for_error(self) -> None:
        """Raise the error this answer carries, if any.

        An error the worker sent (``to_dict()`` JSON) is rebuilt as it was; a handler's own
        non-2xx answer (``context.set_response_status``) becomes an error with its status and
        body.
        """
        status = self.status
        if not self.error and status < 400:
            return
        try:
            document = json.loads(self.body)
        except ValueError:
            document = None
        if isinstance(document, dict) and "message" in document:
            raise from_dict(document)
        raise TsfError(self.body.decode("utf-8", "replace")[:1000] or
                       f"handler answered {status}", status=status)


@dataclass(slots=True)
class BatchResult:
    """A worker's answers to a batch, in the order of its requests, and what it measured."""

    answers: list[Answer]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    metrics: list[dict] = field(default_factory=list)  # tsf.runtime.handler_metrics records
    stamps: list | None = None  # [stage, start_ns, end_ns] per stage, when asked for

    def to_wire(self) -> tuple[dict, list[bytes]]:
        blobs: list[bytes] = []
        header: dict[str, Any] = {"results": [a.wire_into(blobs) for a in self.answers],
                                  "timings": self.timings, "metrics": self.metrics}
        if self.stamps is not None:
            header["stamps"] = self.stamps
        return header, blobs

    @classmethod
    def from_wire(cls, header: dict, blobs: list[bytes]) -> "BatchResult":
        answers = [Answer.with_body(wire, body) for wire, body in zip(header["results"], blobs)]
        return cls(answers, header.get("timings") or {}, header.get("metrics") or [],
                   header.get("stamps"))


@dataclass(slots=True)
class ProfileOrder:
    """Record the next ``batches`` batches with torch's and Python's profilers, and write the
    results into ``directory`` (see :mod:`tsf.runtime.profiler`)."""

    batches: int
    directory: str

    def to_wire(self) -> dict:
        return {"batches": self.batches, "directory": self.directory}

    @classmethod
    def from_wire(cls, header: dict) -> "ProfileOrder":
        return cls(int(header["batches"]), str(header["directory"]))

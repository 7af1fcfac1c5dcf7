"""What the job store keeps: a job's record, its stored result, a claimed job, and how a job
and its request travel in and out of a store as bytes.

A job moves ``queued -> running -> succeeded | failed``; ``cancelled`` from queued or running;
``expired`` once ``job_ttl`` has passed (its input and result are then gone).  A request and an
answer are stored in the framing workers use (:mod:`tsf.workers.protocol`): a JSON header and
the bodies as they are, never re-encoded.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import TsfError
from ..workers import protocol
from ..workers.messages import Answer, Request

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED = (
    "queued", "running", "succeeded", "failed", "cancelled", "expired")
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED, EXPIRED)
MODEL, WORKFLOW = "model", "workflow"  # what a job's target names

STORED_REQUEST, STORED_ANSWER = 20, 21  # frame kinds of stored bytes (never on a socket)
# headers that must not be written to the store: credentials of the client that submitted
PRIVATE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


class JobStoreError(TsfError):
    """The job store cannot be used: a corrupt or foreign file, a store another server holds,
    an unreachable Redis."""

    status, type = 500, "JobStoreException"


def iso_time(seconds: float | None) -> str | None:
    """``2026-12-07T03:48:39.585Z`` (UTC, milliseconds), or None."""
    if seconds is None:
        return None
    whole = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", whole) + f".{int(seconds * 1000) % 1000:03d}Z"


@dataclass
class JobRecord:
    """One job as the store keeps it (inputs and results are kept apart)."""

    id: str
    model: str
    version: str | None
    status: str
    created: float
    target: str = MODEL
    kind: str = "predict"
    started: float | None = None
    finished: float | None = None
    expires: float | None = None
    attempts: int = 0
    error: dict | None = None
    callback_url: str | None = None
    callback_status: str | None = None  # pending, delivered or failed
    input_size: int = 0
    result_size: int = 0
    seq: int = 0  # submission order, the page token of the list

    def to_dict(self) -> dict[str, Any]:
        """The job as ``GET /jobs/{id}`` shows it."""
        doc: dict[str, Any] = {"id": self.id, "status": self.status, "model": self.model,
                               "version": self.version, "created": iso_time(self.created),
                               "started": iso_time(self.started),
                               "finished": iso_time(self.finished),
                               "expires": iso_time(self.expires), "attempts": self.attempts}
        if self.target != MODEL:
            doc["target"] = self.target
        if self.kind != "predict":
            doc["kind"] = self.kind
        if self.error is not None:
            doc["error"] = self.error
        if self.callback_url:
            doc["callback"] = {"url": self.callback_url, "status": self.callback_status}
        return doc


@dataclass
class StoredResult:
    """A finished job's answer: what ``GET /jobs/{id}/result`` sends back."""

    status: int
    ctype: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Claimed:
    """A job a runner took from the store, with its stored request."""

    record: JobRecord
    payload: bytes


def _pack(kind: int, header: dict, blobs: list[bytes]) -> bytes:
    return b"".join(protocol.encode(kind, header, blobs))


def _unpack(kind: int, data: bytes) -> tuple[dict, list[bytes]]:
    try:
        found, head_len, body_len = protocol.PREFIX.unpack_from(data)
        start = protocol.PREFIX.size
        if found != kind or start + head_len + body_len != len(data):
            raise protocol.ProtocolError("not a stored message")
        return protocol.decode(data[start:start + head_len], memoryview(data)[start + head_len:])
    except (struct.error, ValueError, KeyError, protocol.ProtocolError) as exc:
        raise JobStoreError(f"the stored data is damaged ({exc})") from None


def pack_request(request: Request) -> bytes:
    """A request as stored bytes, without the client's credentials."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in PRIVATE_HEADERS}
    blobs: list[bytes] = []
    header = Request(request.id, request.parts, headers, request.params, request.kind,
                     request.protocol).wire_into(blobs)
    return _pack(STORED_REQUEST, header, blobs)


def unpack_request(data: bytes) -> Request:
    header, blobs = _unpack(STORED_REQUEST, data)
    try:
        return Request.from_wire(header, blobs)
    except (KeyError, TypeError) as exc:
        raise JobStoreError(f"the stored request is damaged ({exc})") from None


def pack_result(result: StoredResult) -> bytes:
    answer = Answer(result.status, result.ctype, result.body, result.headers)
    header, blobs = answer.to_wire()
    return _pack(STORED_ANSWER, header, blobs)


def unpack_result(data: bytes) -> StoredResult:
    header, blobs = _unpack(STORED_ANSWER, data)
    try:
        answer = Answer.from_wire(header, blobs)
    except (KeyError, TypeError) as exc:
        raise JobStoreError(f"the stored result is damaged ({exc})") from None
    return StoredResult(answer.status, answer.ctype, answer.body, answer.headers)

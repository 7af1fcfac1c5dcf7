"""The capture record, and SageMaker Data Capture's JSON Lines format for it.

One record per captured request holds what the model saw and answered::

    {"captureData": {
       "endpointInput":  {"observedContentType": "application/json", "mode": "INPUT",
                          "data": "[[1, 2]]", "encoding": "JSON"},
       "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                          "data": "{\\"label\\": 1}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<request id>", "inferenceId": "<caller's id>",
                       "inferenceTime": "2026-12-07T03:48:39.585Z",
                       "model": "m", "modelVersion": "1.0"},
     "eventVersion": "0"}

``encoding`` is ``JSON`` or ``CSV`` (the text as it came) for JSON and CSV content types, else
``BASE64``.  A body cut at ``max_record_bytes`` is always ``BASE64`` and carries
``"truncatedFrom": <full size in bytes>``.  Files are laid out as SageMaker lays them out:
``{model}/{version}/yyyy/mm/dd/hh/{MM}-{SS}-{mmm}-{uuid}.jsonl`` by the UTC hour of the
inference.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

EVENT_VERSION = "0"
INFERENCE_ID_HEADERS = ("X-Inference-Id", "X-Amzn-SageMaker-Inference-Id")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(slots=True)
class CaptureRecord:
    """One captured request and its answer (either side ``None`` when the mode leaves it out).

    ``request_size`` and ``response_size`` are the full sizes; a body longer than the
    model's ``max_record_bytes`` was cut to that many bytes.
    """

    event_id: str
    model: str
    version: str
    time: float  # seconds since the epoch
    request_ctype: str
    request_body: bytes | None
    request_size: int
    response_ctype: str
    response_body: bytes | None
    response_size: int
    inference_id: str | None = None
    protocol: str = "torchserve"
    line: bytes | None = field(default=None, compare=False, repr=False)  # made once

    @property
    def request_truncated(self) -> bool:
        return self.request_body is not None and len(self.request_body) < self.request_size

    @property
    def response_truncated(self) -> bool:
        return self.response_body is not None and len(self.response_body) < self.response_size

    def to_sagemaker(self) -> dict[str, Any]:
        """The record in SageMaker Data Capture's format (see the module docstring)."""
        data: dict[str, Any] = {}
        if self.request_body is not None:
            data["endpointInput"] = _side("INPUT", self.request_ctype, self.request_body,
                                          self.request_size)
        if self.response_body is not None:
            data["endpointOutput"] = _side("OUTPUT", self.response_ctype, self.response_body,
                                           self.response_size)
        meta: dict[str, Any] = {"eventId": self.event_id}
        if self.inference_id:
            meta["inferenceId"] = self.inference_id
        meta.update(inferenceTime=iso_time(self.time), model=self.model,
                    modelVersion=self.version)
        return {"captureData": data, "eventMetadata": meta, "eventVersion": EVENT_VERSION}

    def to_json_line(self) -> bytes:
        """:meth:`to_sagemaker` as one line of compact JSON (built directly: the sinks write
        one per captured request), made once."""
        if self.line is None:
            self.line = self._json_line()
        return self.line

    def _json_line(self) -> bytes:
        parts = []
        if self.request_body is not None:
            parts.append('"endpointInput":' + _side_json("INPUT", self.request_ctype,
                                                         self.request_body, self.request_size))
        if self.response_body is not None:
            parts.append('"endpointOutput":' + _side_json("OUTPUT", self.response_ctype,
                                                          self.response_body,
                                                          self.response_size))
        inference = f',"inferenceId":{_quote(self.inference_id)}' if self.inference_id else ""
        return (f'{{"captureData":{{{",".join(parts)}}},"eventMetadata":{{"eventId":'
                f'{_quote(self.event_id)}{inference},"inferenceTime":"{iso_time(self.time)}",'
                f'"model":{_quote(self.model)},"modelVersion":{_quote(self.version)}}},'
                f'"eventVersion":"{EVENT_VERSION}"}}\n').encode()


def encoding_of(ctype: str) -> str:
    """``JSON``, ``CSV`` or ``BASE64``: how a body of this content type is written."""
    media = ctype.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "JSON"
    if media in ("text/csv", "application/csv"):
        return "CSV"
    return "BASE64"


def _side(mode: str, ctype: str, body: bytes, size: int) -> dict[str, Any]:
    encoding = encoding_of(ctype)
    truncated = len(body) < size
    text = None
    if encoding != "BASE64" and not truncated:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if text is None:
        encoding, text = "BASE64", base64.b64encode(body).decode("ascii")
    side = {"observedContentType": ctype, "mode": mode, "data": text, "encoding": encoding}
    if truncated:
        side["truncatedFrom"] = size
    return side


def _side_json(mode: str, ctype: str, body: bytes, size: int) -> str:
    side = _side(mode, ctype, body, size)
    extra = f',"truncatedFrom":{size}' if "truncatedFrom" in side else ""
    # base64 needs no JSON escaping; text does
    data = f'"{side["data"]}"' if side["encoding"] == "BASE64" else _quote(side["data"])
    return (f'{{"observedContentType":{_quote(ctype)},"mode":"{mode}","data":{data},'
            f'"encoding":"{side["encoding"]}"{extra}}}')


def decode_side(side: dict[str, Any]) -> bytes:
    """A captured body's bytes, whatever its encoding (for readers of capture files)."""
    data = side.get("data", "")
    if side.get("encoding") == "BASE64":
        return base64.b64decode(data)
    return str(data).encode("utf-8")


def iso_time(seconds: float) -> str:
    """ISO-8601 UTC with milliseconds, as SageMaker writes ``inferenceTime``."""
    whole = int(seconds)
    if whole != _second[0]:  # most records share their second with the one before
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((seconds - whole) * 1000):03d}Z"


_second: list = [None, ""]  # the last second formatted, and its text


def parse_time(text: str) -> float:
    """Seconds since the epoch of an ``inferenceTime`` (or any ISO-8601 UTC time)."""
    from datetime import datetime, timezone

    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def path_part(text: str) -> str:
    """A model name or version made safe as one path component (or S3 key segment)."""
    safe = _UNSAFE.sub("_", text) or "_"
    return "_" + safe if safe in (".", "..") else safe


def hour_prefix(model: str, version: str, seconds: float) -> str:
    """``{model}/{version}/yyyy/mm/dd/hh``: where a record of that time belongs."""
    return f"{path_part(model)}/{path_part(version)}/" + \
        time.strftime("%Y/%m/%d/%H", time.gmtime(seconds))


def file_name(seconds: float) -> str:
    """``{MM}-{SS}-{mmm}-{uuid}.jsonl`` after the first record's time, as SageMaker names files."""
    millis = int((seconds - int(seconds)) * 1000)
    return time.strftime("%M-%S", time.gmtime(seconds)) + f"-{millis:03d}-{uuid.uuid4()}.jsonl"


def inference_id_of(headers: Any) -> str | None:
    """The caller's inference id (``X-Inference-Id`` or SageMaker's header), if any.

    ``headers`` is Tornado's case-insensitive headers or a dict with lower-case keys (gRPC).
    """
    for name in INFERENCE_ID_HEADERS:
        value = headers.get(name) or headers.get(name.lower())
        if value:
            return value[:256]
    return None

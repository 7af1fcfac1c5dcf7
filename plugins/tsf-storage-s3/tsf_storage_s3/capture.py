"""The ``s3`` capture sink: captured records as SageMaker Data Capture files on S3.

::

    capture:
      sinks:
        s3: {url: "s3://bucket/prefix", flush_seconds: 1}

Each write puts one object per model version and UTC hour, keyed as SageMaker keys them::

    s3://bucket/prefix/<model>/<version>/yyyy/mm/dd/hh/<MM>-<SS>-<mmm>-<uuid>.jsonl

(S3 cannot append, so every flush is a new object; ``flush_seconds`` trades the number of
objects against what a killed server can lose.)  Credentials, region and endpoint come from the
usual AWS sources; ``endpoint_url`` (or ``TSF_S3_ENDPOINT_URL``) points it at an S3-compatible
store.  A failed put fails the batch, which tsf retries with backoff.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from tsf import hookimpl
from tsf.errors import BadRequest
from tsf.monitoring.records import CaptureRecord, file_name, hour_prefix
from tsf.monitoring.sinks import check_options, let_the_loop_run

OPTIONS = ("url", "endpoint_url")


class S3CaptureSink:
    """Puts each batch's records as JSON Lines objects (see the module docstring)."""

    def __init__(self, options: dict[str, Any], context: Any) -> None:
        check_options("s3", options, OPTIONS)
        url = options.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme != "s3" or not parts.netloc:
            raise BadRequest(f"capture.sinks.s3.url must be s3://bucket[/prefix], got "
                             f"{url!r:.80}")
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        endpoint = options.get("endpoint_url") or os.environ.get("TSF_S3_ENDPOINT_URL")
        if endpoint is not None and not isinstance(endpoint, str):
            raise BadRequest("capture.sinks.s3.endpoint_url must be a URL")
        self.endpoint = endpoint or None
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:  # made in the sink's thread, on first use
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint,
                config=Config(connect_timeout=5, read_timeout=15,
                              retries={"max_attempts": 1}))
        return self._client

    def key(self, hour: str, first: CaptureRecord) -> str:
        name = f"{hour}/{file_name(first.time)}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def write(self, records: list[CaptureRecord]) -> None:
        groups: dict[str, list[CaptureRecord]] = {}
        for record in records:
            groups.setdefault(hour_prefix(record.model, record.version, record.time),
                              []).append(record)
        client = self.client()
        for hour, chosen in groups.items():
            lines = []
            for index, record in enumerate(chosen):
                lines.append(record.to_json_line())
                let_the_loop_run(index)
            body = b"".join(lines)
            client.put_object(Bucket=self.bucket, Key=self.key(hour, chosen[0]), Body=body,
                              ContentType="application/jsonl")

    def close(self) -> None:
        self._client = None


@hookimpl
def tsf_register_capture_sinks() -> dict[str, type]:
    return {"s3": S3CaptureSink}

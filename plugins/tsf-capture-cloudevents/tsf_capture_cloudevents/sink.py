"""The ``cloudevents`` capture sink: each captured request and answer POSTed as a CloudEvent in
binary mode, as KServe's payload logger sends them, so its receivers (event display, Alibi
Detect, a Knative broker) take tsf's events unchanged::

    capture:
      sinks:
        cloudevents: {url: "http://logger.monitoring:8080/"}

Per record, a request event then a response event (the mode leaves either out), with

* ``ce-specversion: 1.0``, ``ce-id``: the request id (the same on both events);
* ``ce-type``: ``org.kubeflow.serving.inference.request`` / ``.response``;
* ``ce-source``: the ``source`` option (default ``http://<host name>/``);
* ``ce-time``: the time of the inference;
* ``Content-Type``: the body's own content type (KServe repeats the request's on the response
  event; tsf does not, so a JSON answer to an image stays readable);
* extensions ``ce-inferenceservicename`` (the model), ``ce-namespace`` (the ``namespace``
  option, else ``POD_NAMESPACE``, else ``default``), ``ce-component`` (``predictor``),
  ``ce-endpoint`` (the ``endpoint`` option, default empty), and tsf's own
  ``ce-modelversion``, ``ce-inferenceid`` (when the caller sent one) and ``ce-truncatedfrom``
  (a body cut at ``max_record_bytes``: its full size).

The body is the captured bytes.  A non-2xx answer or a connection error fails the batch, which
tsf retries with backoff; events already accepted may then be sent again (``ce-id`` and the
type tell duplicates apart).  Options: ``url`` (required), ``source``, ``namespace``,
``component``, ``endpoint``, ``timeout`` (seconds, default 5), ``headers`` (extra HTTP headers,
an ``Authorization`` for instance).
"""

from __future__ import annotations

import datetime
import http.client
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from tsf import hookimpl
from tsf.errors import BadRequest
from tsf.monitoring.records import CaptureRecord
from tsf.monitoring.sinks import check_options

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
OPTIONS = ("url", "source", "namespace", "component", "endpoint", "timeout", "headers")


def _text(options: dict, key: str, default: str) -> str:
    value = options.get(key, default)
    if not isinstance(value, str):
        raise BadRequest(f"capture.sinks.cloudevents.{key} must be a string, got {value!r:.60}")
    return value


class CloudEventsSink:
    """POSTs KServe-style CloudEvents over one kept-alive connection (see the module
    docstring)."""

    def __init__(self, options: dict[str, Any], context: Any) -> None:
        check_options("cloudevents", options, OPTIONS)
        url = options.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"capture.sinks.cloudevents.url must be an http(s) URL, got "
                             f"{url!r:.80}")
        self.parts = parts
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.source = _text(options, "source", f"http://{socket.gethostname()}/")
        self.namespace = _text(options, "namespace", os.environ.get("POD_NAMESPACE", "default"))
        self.component = _text(options, "component", "predictor")
        self.endpoint = _text(options, "endpoint", "")
        timeout = options.get("timeout", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                not 0 < timeout <= 300:
            raise BadRequest("capture.sinks.cloudevents.timeout must be seconds from 0 to 300")
        self.timeout = float(timeout)
        headers = options.get("headers", {})
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise BadRequest("capture.sinks.cloudevents.headers must map header names to "
                             "strings")
        self.headers = headers
        self._connection: http.client.HTTPConnection | None = None

    def events(self, record: CaptureRecord) -> list[Any]:
        """The record's request and response events (cloudevents' ``CloudEvent``)."""
        from cloudevents.core.v1.event import CloudEvent

        base = {"id": record.event_id, "source": self.source,
                "time": datetime.datetime.fromtimestamp(record.time, datetime.timezone.utc),
                "inferenceservicename": record.model, "namespace": self.namespace,
                "component": self.component, "endpoint": self.endpoint,
                "modelversion": record.version}
        if record.inference_id:
            base["inferenceid"] = record.inference_id
        events = []
        for kind, ctype, body, size in (
                (REQUEST_TYPE, record.request_ctype, record.request_body, record.request_size),
                (RESPONSE_TYPE, record.response_ctype, record.response_body,
                 record.response_size)):
            if body is None:
                continue
            attributes = dict(base, type=kind,
                              datacontenttype=ctype or "application/octet-stream")
            if len(body) < size:
                attributes["truncatedfrom"] = str(size)
            events.append(CloudEvent(attributes=attributes, data=bytes(body)))
        return events

    def _post(self, headers: dict[str, str], body: bytes) -> None:
        if self._connection is None:
            cls = http.client.HTTPSConnection if self.parts.scheme == "https" \
                else http.client.HTTPConnection
            self._connection = cls(self.parts.hostname, self.parts.port, timeout=self.timeout)
        try:
            self._connection.request("POST", self.path, body=body,
                                     headers={**self.headers, **headers})
            response = self._connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        if not 200 <= response.status < 300:
            raise OSError(f"the CloudEvents receiver answered {response.status}")

    def write(self, records: list[CaptureRecord]) -> None:
        from cloudevents.core.bindings.http import to_binary_event

        for record in records:
            for event in self.events(record):
                message = to_binary_event(event)
                self._post(dict(message.headers), message.body)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@hookimpl
def tsf_register_capture_sinks() -> dict[str, type]:
    return {"cloudevents": CloudEventsSink}

"""Callbacks: when a job with a ``callback_url`` ends, its result (or its error) is POSTed there.

* The URL is checked at submit: ``http`` or ``https``, and allowed by ``allowed_urls`` like a
  model URL (the same check, :func:`tsf.archives.sources.check_allowed`): with the default empty
  allow-list every callback host is refused (403), so a client cannot make the server call
  into its network (SSRF).  Redirects are not followed.
* The body is the result as the model answered it (its content type), or the job's error as
  ``{"code", "type", "message"}`` JSON.  Headers name the job (``X-Tsf-Job-Id``,
  ``X-Tsf-Job-Status``, ``X-Tsf-Model``) and sign the body:
  ``X-Tsf-Signature-256: sha256=<hex HMAC-SHA256 of the body under job_callback_secret>``.
  Without a secret configured, a submit with a callback is refused (400).
* A delivery that fails (no connection, a timeout, 5xx, 408 or 429) is retried after
  ``job_callback_backoff`` seconds, doubling each time, ``job_callback_retries`` times; any other
  answer ends it.  Whether it was delivered is stored with the job; a server that stopped
  before delivering sends the callbacks it still owes when it starts again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from ..archives.sources import check_allowed
from ..errors import BadRequest, Forbidden
from .records import SUCCEEDED, JobRecord, StoredResult
from .store import JobStore

log = logging.getLogger("tsf.jobs")

SIGNATURE_HEADER = "X-Tsf-Signature-256"
RETRIED = frozenset({408, 429, 599})  # 599: tornado's code for no answer at all
MAX_URL = 2048


def check_callback_url(url: str, config: Any) -> str:
    """The callback URL, checked (400 malformed or no secret to sign with; 403 not allowed)."""
    url = url.strip()
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"callback_url must be an http or https URL with a host, of at most "
                         f"{MAX_URL} characters: {url[:200]!r}")
    if not config.job_callback_secret:
        raise BadRequest("callbacks are signed with job_callback_secret, which this server "
                         "does not set; submit without callback_url and poll the job")
    try:
        check_allowed(url, config)
    except Forbidden:
        raise Forbidden(f"callback URL {url!r} is not allowed: callback hosts must match "
                        "allowed_urls, as model URLs do") from None
    return url


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def callback_message(record: JobRecord, result: StoredResult | None) -> tuple[bytes, str]:
    """The body and content type a job's callback sends."""
    if record.status == SUCCEEDED and result is not None:
        return result.body, result.ctype
    error = record.error or {"code": 500, "type": "InternalServerException",
                             "message": f"job {record.status}"}
    return json.dumps(error).encode(), "application/json"


class CallbackSender:
    """Delivers callbacks with retries, and records the outcome in the store."""

    def __init__(self, store: JobStore, config: Any, counter: Any = None) -> None:
        self.store = store
        self.secret = config.job_callback_secret
        self.retries = max(0, config.job_callback_retries)
        self.backoff = max(0.0, config.job_callback_backoff)
        self.counter = counter  # tsf_job_callbacks{outcome}
        self._tasks: set[asyncio.Task] = set()

    def send(self, record: JobRecord) -> None:
        """Deliver ``record``'s callback in the background."""
        task = asyncio.ensure_future(self._deliver(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)

    async def _deliver(self, record: JobRecord) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        result = await self.store.result(record.id) if record.status == SUCCEEDED else None
        body, ctype = callback_message(record, result)
        headers = {"Content-Type": ctype, "X-Tsf-Job-Id": record.id,
                   "X-Tsf-Job-Status": record.status, "X-Tsf-Model": record.model,
                   SIGNATURE_HEADER: sign(self.secret, body)}
        client = AsyncHTTPClient()
        delay, outcome = self.backoff, "failed"
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            headers["X-Tsf-Delivery-Attempt"] = str(attempt + 1)
            request = HTTPRequest(record.callback_url or "", method="POST", body=body,
                                  headers=headers, follow_redirects=False,
                                  connect_timeout=10, request_timeout=30)
            response = await client.fetch(request, raise_error=False)
            if 200 <= response.code < 300:
                outcome = "delivered"
                break
            if response.code < 500 and response.code not in RETRIED:
                log.warning("callback of job %s to %s refused with %d; not retried", record.id,
                            record.callback_url, response.code)
                break
            log.warning("callback of job %s to %s failed (%s); attempt %d of %d", record.id,
                        record.callback_url, response.error or response.code, attempt + 1,
                        self.retries + 1)
        if self.counter is not None:
            self.counter.labels(outcome).inc()
        await self.store.set_callback(record.id, outcome)

"""The job API on the inference address (see docs/jobs.md).

``POST /jobs/{model}[/{version}]`` (or ``/predictions/...`` with ``Prefer: respond-async``)
stores the request as a job and answers ``202 Accepted`` with ``Location: /jobs/{id}``;
``GET /jobs/{id}``, ``GET /jobs/{id}/result``, ``DELETE /jobs/{id}`` and
``GET /jobs?model=&status=&limit=&page_token=`` read, fetch and cancel jobs.  The body, content
types and headers are those of ``/predictions``; ``callback_url`` (query) or ``Callback-Url``
(header) asks for a callback, ``Idempotency-Key`` makes a retried submit return the same job.
"""

from __future__ import annotations

from typing import Any

from ..errors import ResourceNotFound, ServiceUnavailable
from ..workers.messages import PREDICT
from .api_handler import ApiHandler, BodyHandler
from .request_body import request_parts

CALLBACK_HEADER = "Callback-Url"


def prefers_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240) asks for ``respond-async``."""
    return prefer is not None and any(
        token.split(";", 1)[0].split("=", 1)[0].strip().lower() == "respond-async"
        for token in prefer.split(","))


def _jobs(handler: ApiHandler) -> Any:
    jobs = handler.services.jobs
    if jobs is None:
        raise ServiceUnavailable("jobs are off on this server (job_store=off)")
    return jobs


async def submit_job(handler: BodyHandler, model: str, version: str | None,
                     kind: str = PREDICT) -> None:
    """Store the request ``handler`` received as a job of ``model``; answer 202."""
    jobs = _jobs(handler)
    message = request_parts(handler.request, handler.body(), kind)
    callback = handler.get_query_argument("callback_url", None) or \
        handler.request.headers.get(CALLBACK_HEADER)
    record, created = await jobs.submit(model, version, message,
                                        handler.request.headers.get("Idempotency-Key"),
                                        callback)
    handler.set_header("Location", f"/jobs/{record.id}")
    if "Prefer" in handler.request.headers:
        handler.set_header("Preference-Applied", "respond-async")
    if not created:
        handler.set_header("Idempotent-Replayed", "true")
    handler.write_json(record.to_dict(), status=202)


class JobsHandler(ApiHandler):
    """``GET /jobs``: the list, one page at a time."""

    async def get(self) -> None:
        arg = self.get_query_argument
        self.write_json(await _jobs(self).page(arg("model", None), arg("status", None),
                                               arg("limit", None), arg("page_token", None)))


class JobHandler(BodyHandler):
    """``GET /jobs/{id}``, ``DELETE /jobs/{id}``; ``POST /jobs/{model}`` submits."""

    async def get(self, job_id: str) -> None:
        self.write_json((await _jobs(self).get(job_id)).to_dict())

    async def delete(self, job_id: str) -> None:
        self.write_json((await _jobs(self).cancel(job_id)).to_dict())

    async def post(self, model: str) -> None:
        await submit_job(self, model, None)


class JobPartHandler(BodyHandler):
    """``GET /jobs/{id}/result``; ``POST /jobs/{model}/{version}`` submits."""

    async def get(self, job_id: str, part: str) -> None:
        if part != "result":
            raise ResourceNotFound("Requested resource is not found, please refer to API "
                                   "document.")
        result = await _jobs(self).result(job_id)
        self.set_status(result.status)
        self.set_header("Content-Type", result.ctype)
        for key, value in result.headers.items():
            self.set_header(key, value)
        self.set_header("X-Tsf-Job-Id", job_id)
        self.finish(result.body)

    async def post(self, model: str, version: str) -> None:
        await submit_job(self, model, version)


def routes(options: dict[str, Any]) -> list:
    part = r"([^/]+)"
    return [(r"/jobs", JobsHandler, options),
            (rf"/jobs/{part}", JobHandler, options),
            (rf"/jobs/{part}/{part}", JobPartHandler, options)]

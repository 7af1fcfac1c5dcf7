"""The base of the HTTP routes that send requests to models, whatever their protocol: each
request traced and counted whatever its outcome, queued through the data plane, and abandoned if
its client leaves."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ..batching.queue import Job
from ..errors import TsfError
from ..outcome import Outcome
from ..services import Services
from ..serving.traffic import MODEL_VERSION_HEADER
from ..workers.messages import Request
from .api_handler import BodyHandler


class ModelRequestHandler(BodyHandler):
    """A route whose request body goes to a model (predictions, KServe, SageMaker,
    workflows)."""

    def initialize(self, services: Services, api: str) -> None:
        super().initialize(services, api)
        self._jobs: list[Job] = []

    def on_connection_close(self) -> None:
        """The client left: abandon this request's queued jobs."""
        super().on_connection_close()
        for job in self._jobs:
            job.abandon()
        self._jobs.clear()

    def on_finish(self) -> None:
        super().on_finish()
        # A job holds this handler (its on_partial): without the list, the two are freed at
        # once rather than left for the cycle collector, whose sweeps of every request's
        # Tornado objects cost more than the rest of the metrics path.
        self._jobs.clear()

    @contextlib.contextmanager
    def observed(self, route: str, model: str, kind: str, label_version: str
                 ) -> Iterator[Outcome]:
        """Trace and count one request sent to a model, whatever its outcome.

        The body sets ``outcome.model_version`` and ``outcome.code``; a TsfError sets the code
        from its status.  The span (if tracing is on) and the request metrics close here.
        """
        tracing = self.services.tracing
        span = None
        if tracing.enabled:
            span = tracing.start_request(self.request, route, model)
            self.trace_id = tracing.trace_id(span)
            self.set_header("X-Trace-Id", self.trace_id)
        outcome = Outcome(span, self.services.metrics)
        try:
            yield outcome
        except TsfError as exc:
            outcome.code = exc.status
            raise
        finally:
            outcome.close(self.services, kind, label_version)

    def submit(self, model: str, version: str | None, request: Request, span: Any = None,
               workflow: str | None = None) -> tuple[Any, Job]:
        """Queue one request for a model; it is abandoned if this client disconnects."""
        mv, job = self.services.dataplane.submit(model, version, request, span, workflow)
        self._jobs.append(job)
        self.set_header(MODEL_VERSION_HEADER, mv.version)
        return mv, job

    def capture(self, mv: Any, request_id: str, response_ctype: str, response_body: bytes,
                protocol: str) -> None:
        """Hand a successful answer to data capture, when the version captures."""
        if mv.settings.capture is not None:
            self.services.monitor.capture(mv, request_id, self.request.headers,
                                          self.request.headers.get("Content-Type", ""),
                                          self.body(), response_ctype, response_body, protocol)

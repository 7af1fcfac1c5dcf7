"""What one request sent to a model came to, for every protocol: closing its span and
counting it in the request metrics."""

from __future__ import annotations

import time
from typing import Any


class Outcome:
    """The model version that took a request, the HTTP-equivalent status it ended with, and
    its tracing span (``None`` when tracing is off).

    The protocol sets ``model_version`` once a model accepted the request, and ``code``;
    :meth:`close` ends the span and records the request, whatever happened.
    """

    __slots__ = ("model_version", "code", "span", "started")

    def __init__(self, span: Any = None) -> None:
        self.model_version: Any = None
        self.code = 500
        self.span = span
        self.started = time.perf_counter()

    def close(self, services: dict[str, Any], kind: str, label_version: str) -> None:
        if self.span is not None:
            services["tracing"].end_request(self.span, self.code)
        mv = self.model_version
        if mv is not None:
            services["manager"].metrics.record_request(
                mv.name, mv.version, label_version, self.code,
                time.perf_counter() - self.started, kind)

"""CORS headers with TorchServe's keys: ``cors_allowed_origin``, ``cors_allowed_methods`` and
``cors_allowed_headers``.

As in TorchServe, each key that is set is sent as its ``Access-Control-Allow-*`` header on every
answer of the three HTTP APIs (errors included), whatever the request, and a header the model's
handler set on its answer wins.  What tsf adds, because browsers need it:

* a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 with those
  headers by every route, without a token (a browser sends none with it), where TorchServe routes
  it like any request (``OPTIONS /models`` answers 405 there).  ``OPTIONS /`` without that header
  is still the OpenAPI description;
* ``cors_allowed_origin`` may list several origins (comma-separated): the request's ``Origin`` is
  sent back when it is one of them (with ``Vary: Origin``), since a browser refuses a list.
  ``*`` or a single origin is sent as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ORIGIN = "Access-Control-Allow-Origin"
METHODS = "Access-Control-Allow-Methods"
HEADERS = "Access-Control-Allow-Headers"


@dataclass(frozen=True)
class CorsPolicy:
    """The configured values (empty: that header is not sent)."""

    origin: str = ""
    methods: str = ""
    headers: str = ""

    @classmethod
    def from_config(cls, config: Any) -> "CorsPolicy | None":
        """The server's policy, or None when no CORS key is set."""
        policy = cls(config.cors_allowed_origin.strip(), config.cors_allowed_methods.strip(),
                     config.cors_allowed_headers.strip())
        return policy if policy.origin or policy.methods or policy.headers else None

    @property
    def origins(self) -> list[str]:
        return [o.strip() for o in self.origin.split(",") if o.strip()]

    def answer_headers(self, request_origin: str | None) -> list[tuple[str, str]]:
        """The headers for an answer to a request from ``request_origin``."""
        out: list[tuple[str, str]] = []
        origins = self.origins
        if len(origins) == 1:
            out.append((ORIGIN, origins[0]))
        elif origins:
            out.append(("Vary", "Origin"))
            if request_origin in origins:
                out.append((ORIGIN, request_origin))
        if self.methods:
            out.append((METHODS, self.methods))
        if self.headers:
            out.append((HEADERS, self.headers))
        return out


def is_preflight(request: Any) -> bool:
    """Whether ``request`` (Tornado's) is a browser's CORS preflight."""
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers

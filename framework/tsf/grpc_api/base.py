"""What every tsf gRPC service shares: the token check, request ids, metrics, errors."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator

import grpc

from ..dataplane import DataPlane, derive_request_id
from ..errors import InternalError, TsfError, check_response_size
from ..outcome import Outcome
from ..services import Services
from ..serving.manager import ModelManager
from ..serving.traffic import MODEL_VERSION_HEADER
from .status import abort, headers_of

log = logging.getLogger("tsf.grpc")
PROTOBUF = "application/grpc+proto"  # a captured request or answer kept as its protobuf


class GrpcService:
    """Base of the servicers; ``api`` names the token that guards it."""

    api = "inference"
    service = ""  # the full gRPC service name, for spans

    def __init__(self, services: Services, messages: Any) -> None:
        self.services = services
        self.pb = messages  # the generated ``*_pb2`` module of the service's proto
        self.dataplane: DataPlane = services.dataplane
        self.manager: ModelManager = services.manager
        self.max_response_size: int = services.config.max_response_size

    def authorize(self, context: Any) -> dict[str, str]:
        """The call's metadata as headers, once its bearer token (if any is set) checks out."""
        headers = headers_of(context)
        self.dataplane.check_token(self.api, headers.get("authorization"))
        return headers

    @staticmethod
    def request_id(headers: dict[str, str]) -> str:
        return derive_request_id(headers.get("x-request-id"))

    @contextlib.asynccontextmanager
    async def answering(self, context: Any, model: str = "", kind: str = "predict",
                        label_version: str = "default", method: str = "",
                        headers: dict[str, str] | None = None) -> AsyncIterator[Outcome]:
        """Count the call in the request metrics, trace it when ``method`` is given, and turn
        a tsf error into a gRPC status."""
        tracing = self.services.tracing
        span = None
        if method and tracing.enabled:
            span = tracing.start_rpc(self.service, method,
                                     headers if headers is not None else headers_of(context),
                                     model)
        outcome = Outcome(span, self.services.metrics)
        try:
            yield outcome
            outcome.code = 200
            served_by(context, outcome)
        except TsfError as exc:
            outcome.code = exc.status
            await abort(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("gRPC call failed")
            await abort(context, InternalError("internal server error; see the server log"))
        finally:
            outcome.close(self.services, kind, label_version)

    def check_size(self, payload: bytes) -> None:
        check_response_size(len(payload), self.max_response_size)

    def capture(self, mv: Any, request_id: str, headers: dict[str, str], request_ctype: str,
                request_body: Any, response_ctype: str, response_body: Any,
                protocol: str) -> None:
        """Hand a successful answer to data capture, when the version captures; the bodies
        may be callables, called only then (a protobuf serialised on demand)."""
        if mv.settings.capture is not None:
            self.services.monitor.capture(
                mv, request_id, headers, request_ctype,
                request_body() if callable(request_body) else request_body, response_ctype,
                response_body() if callable(response_body) else response_body, protocol)


def served_by(context: Any, outcome: Outcome) -> None:
    """Name the version that served the call in the trailing metadata (``x-model-version``),
    as HTTP answers do in a header."""
    setter = getattr(context, "set_trailing_metadata", None)
    if outcome.model_version is not None and setter is not None:
        setter(((MODEL_VERSION_HEADER.lower(), outcome.model_version.version),))

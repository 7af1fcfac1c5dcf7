"""tsf errors as gRPC status codes, and gRPC metadata as request headers."""

from __future__ import annotations

from typing import Any

import grpc

from ..errors import TsfError

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
          409: grpc.StatusCode.ALREADY_EXISTS, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          501: grpc.StatusCode.UNIMPLEMENTED, 503: grpc.StatusCode.UNAVAILABLE,
          504: grpc.StatusCode.DEADLINE_EXCEEDED}


def grpc_code(status: int) -> grpc.StatusCode:
    if status in _CODES:
        return _CODES[status]
    return grpc.StatusCode.INVALID_ARGUMENT if 400 <= status < 500 else grpc.StatusCode.INTERNAL


def headers_of(context: Any) -> dict[str, str]:
    """Invocation metadata as a header dict (binary ``-bin`` entries left out)."""
    return {key: value for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)}


async def abort(context: Any, error: TsfError) -> None:
    """End the call with the error's status code and its message as details."""
    await context.abort(grpc_code(error.status), error.message)

"""Exceptions that carry an HTTP status and a TorchServe-style error type.

Every error tsf reports to a client is one of these.  ``server/errors.py`` turns them into the
JSON body ``{"code", "type", "message"}``; workers send them back over the socket by ``type`` so
the front end can raise the same class again.
"""

from __future__ import annotations


class TsfError(Exception):
    """Base class: an error with an HTTP status code and a type name."""

    status: int = 500
    type: str = "InternalServerException"

    def __init__(self, message: str, *, status: int | None = None, type: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def to_dict(self) -> dict:
        return {"code": self.status, "type": self.type, "message": self.message}


class BadRequest(TsfError):
    status, type = 400, "BadRequestException"


class InvalidArchive(TsfError):
    """The archive is corrupt, hostile (zip-slip, symlink, bomb) or lacks what it must have."""

    status, type = 400, "InvalidModelArchiveException"


class Unauthorized(TsfError):
    status, type = 401, "UnauthorizedException"


class Forbidden(TsfError):
    status, type = 403, "ForbiddenException"


class ResourceNotFound(TsfError):
    status, type = 404, "ResourceNotFoundException"


class ModelNotFound(TsfError):
    status, type = 404, "ModelNotFoundException"


class ModelVersionNotFound(TsfError):
    status, type = 404, "ModelVersionNotFoundException"


class MethodNotAllowed(TsfError):
    status, type = 405, "MethodNotAllowedException"


class RequestTimeout(TsfError):
    status, type = 408, "RequestTimeoutException"


class Conflict(TsfError):
    status, type = 409, "ConflictStatusException"


class PayloadTooLarge(TsfError):
    status, type = 413, "RequestEntityTooLargeException"


class UriTooLong(TsfError):
    """The request line passed the header limit (a long query, say): sent before any header."""

    status, type = 414, "URITooLongException"


class HeadersTooLarge(TsfError):
    status, type = 431, "RequestHeaderFieldsTooLargeException"


class ClientGone(TsfError):
    """The client disconnected (or cancelled its call) before its answer was ready."""

    status, type = 499, "ClientClosedRequestException"


class InternalError(TsfError):
    status, type = 500, "InternalServerException"


class HandlerError(TsfError):
    """A handler raised while processing a batch."""

    status, type = 500, "HandlerException"


class ModelLoadError(TsfError):
    status, type = 500, "ModelLoadException"


class WorkerCrashed(ModelLoadError):
    """A worker process died of a signal it was not sent by tsf (SIGSEGV, SIGABRT, the kernel's
    OOM killer...) while loading the model: a crash, which may not happen again, rather than
    an error the handler reported.  ``how`` says how it died ("killed by SIGSEGV")."""

    def __init__(self, message: str, *, how: str = "") -> None:
        super().__init__(message)
        self.how = how


class NotImplementedByModel(TsfError):
    status, type = 501, "NotImplementedException"


class OutOfResources(TsfError):
    """The handler ran out of memory (host or GPU); TorchServe answers these 507."""

    status, type = 507, "OutOfResourcesException"


class ServiceUnavailable(TsfError):
    status, type = 503, "ServiceUnavailableException"


class WorkerDied(TsfError):
    status, type = 503, "WorkerDiedException"


class WorkerTimeout(TsfError):
    status, type = 504, "WorkerTimeoutException"


class BatchNotStarted(WorkerDied):
    """A batch waited for a worker that died before beginning it: safe to send again."""


_BY_TYPE = {
    cls.type: cls
    for cls in (
        BadRequest, InvalidArchive, Unauthorized, Forbidden, ResourceNotFound, ModelNotFound,
        ModelVersionNotFound, MethodNotAllowed, RequestTimeout, Conflict, PayloadTooLarge,
        UriTooLong, HeadersTooLarge, ClientGone, InternalError, HandlerError, ModelLoadError,
        NotImplementedByModel, OutOfResources, ServiceUnavailable, WorkerDied, WorkerTimeout,
    )
}


def from_dict(data: dict) -> TsfError:
    """Rebuild an error sent as ``to_dict()`` (e.g. by a worker)."""
    cls = _BY_TYPE.get(data.get("type", ""), TsfError)
    return cls(str(data.get("message", "")), status=int(data.get("code", 500)),
               type=str(data.get("type", "InternalServerException")))


def check_response_size(size: int, limit: int) -> None:
    """Refuse an answer over ``max_response_size`` (every protocol applies the same limit)."""
    if size > limit:
        raise InternalError(f"response of {size} bytes exceeds max_response_size "
                            f"({limit} bytes)")

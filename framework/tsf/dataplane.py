"""The data plane: the operations every protocol offers, whatever carries them.

HTTP handlers (``server/``) and gRPC servicers (``grpc_api/``) parse their own wire format, call
these operations and write the answer back in their own shape; neither imports the other.  Here
live server and model metadata (the Open Inference Protocol's), readiness, listing and describing
models, the switch that turns the model API off, request ids, token checks, and the hand-off of a
request to the model manager.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import Forbidden
from .generation.request import InvalidRequest
from .oip.requests import tensor_metadata
from .workers.messages import DESCRIBE, Request

if TYPE_CHECKING:
    from .auth import Tokens
    from .config.settings import ServerConfig
    from .serving.health import Health
    from .serving.lifecycle import Lifecycle
    from .serving.manager import ModelManager
    from .serving.registry import ModelVersion, Registry

EXTENSIONS = ["binary_tensor_data"]
DRAINING = "the server is draining before it stops"
PAGE_LIMIT = 100

# Request ids: random version-4 UUIDs as 32 hex digits, as ``uuid.uuid4().hex`` writes them.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)  # version and variant bits
_SET = (4 << 76) | (0x8000 << 48)  # version 4, RFC 4122 variant


def new_request_id() -> str:
    """A fresh id, the same as ``uuid.uuid4().hex`` without building a ``UUID`` object (a
    few times cheaper, and made for every request that brings no ``X-Request-Id``)."""
    return "%032x" % (int.from_bytes(os.urandom(16), "big") & _CLEAR | _SET)


def derive_request_id(header: str | None, protocol_id: str | None = None) -> str:
    """The id a request goes by: the client's ``X-Request-Id``, else the id its protocol
    carries (OIP's ``id``), else a new one."""
    return header or protocol_id or new_request_id()


def server_metadata() -> dict:
    """OIP's server metadata: name, version and protocol extensions."""
    return {"name": "tsf", "version": __version__, "extensions": EXTENSIONS}


def list_models(registry: Registry, limit: int, token: int) -> dict[str, Any]:
    """One page of the model list (at most 100 models; ``nextPageToken`` while more remain)."""
    limit = PAGE_LIMIT if limit <= 0 or limit > PAGE_LIMIT else limit
    token = max(token, 0)
    names = registry.names()
    body: dict[str, Any] = {"models": [{"modelName": n, "modelUrl": registry.get(n).url}
                                       for n in names[token:token + limit]]}
    if token + limit < len(names):
        body["nextPageToken"] = str(token + limit)
    return body


def describe_models(registry: Registry, name: str, version: str | None) -> list[dict]:
    """One description per version (``version`` may be ``all``), with the model's traffic
    split when it has one."""
    versions = registry.versions(name) if version == "all" else [registry.get(name, version)]
    split = registry.split(name)
    described = [mv.describe() for mv in versions]
    if split is not None:
        for entry in described:
            entry["trafficSplit"] = split.percentages()
    return described


class DataPlane:
    """The protocol-neutral operations on one server's models, as its adapters call them.

    ``submit(model, version, request, span=None, workflow=None)`` queues one request message
    (:class:`tsf.workers.messages.Request`) and returns ``(model version, job)``: it is the
    manager's own method, so the hot path pays no extra call.
    """

    def __init__(self, config: ServerConfig, manager: ModelManager, tokens: Tokens,
                 lifecycle: Lifecycle | None = None) -> None:
        self.config = config
        self.manager = manager
        self.tokens = tokens
        self.tokens_enabled = tokens.enabled  # Tokens is frozen: checked once, not per request
        self.lifecycle = lifecycle
        self.submit = manager.submit

    # --- readiness ---------------------------------------------------------------------------
    @property
    def draining(self) -> bool:
        """True once a drain has begun: readiness fails from then on."""
        return self.lifecycle is not None and not self.lifecycle.serving

    def health_report(self) -> Health:
        """The server's health by the rule in :mod:`tsf.serving.health` (TorchServe's ping)."""
        return self.manager.health_report()

    def ready(self) -> tuple[bool, list[str]]:
        """(ready to serve, why not): not draining, and Healthy or Degraded."""
        if self.draining:
            return False, [DRAINING]
        return self.manager.health()

    # --- models ------------------------------------------------------------------------------
    def model_metadata(self, name: str, version: str | None) -> dict:
        """OIP's model metadata: versions, platform, input and output tensors."""
        registry = self.manager.registry
        mv = registry.get(name, version)
        signature = mv.signature()
        return {"name": mv.name, "versions": [v.version for v in registry.versions(name)],
                "platform": "pytorch", "inputs": tensor_metadata(signature.get("inputs")),
                "outputs": tensor_metadata(signature.get("outputs"))}

    def model_ready(self, name: str, version: str | None) -> bool:
        return self.manager.registry.get(name, version).ready

    def list_models(self, limit: int, token: int) -> dict[str, Any]:
        return list_models(self.manager.registry, limit, token)

    async def describe_models(self, name: str, version: str | None,
                              customized: bool = False) -> list[dict]:
        """Describe; with ``customized`` (and one version) add what the handler's
        ``describe_handle()`` answers in a worker, as text: TorchServe's ``customizedMetadata``
        (left out when the handler has no such hook or it returns None)."""
        described = describe_models(self.manager.registry, name, version)
        if customized and len(described) == 1:
            request = Request(derive_request_id(None), [], kind=DESCRIBE)
            _, job = self.manager.submit(name, version, request)
            answer = await job.future
            answer.raise_for_error()
            if answer.body:
                described[0]["customizedMetadata"] = answer.body.decode("utf-8", "replace")
        return described

    # --- generative models -------------------------------------------------------------------
    def generative_models(self) -> list[ModelVersion]:
        """The default version of each model served by a generation engine."""
        registry = self.manager.registry
        return [mv for mv in (registry.get(name) for name in registry.names())
                if mv.engine is not None]

    def check_generative(self, name: str, version: str | None) -> None:
        """404 for an unknown model, 400 for one that no generation engine serves."""
        if self.manager.registry.get(name, version).engine is None:
            raise InvalidRequest(f"model {name} is not served by a generation engine (handler "
                                 "llm); send its requests to /predictions/" + name, "model")

    # --- access ------------------------------------------------------------------------------
    def check_model_api(self) -> None:
        """Registering and unregistering are refused (403) with ``enable_model_api`` off."""
        if not self.config.enable_model_api:
            raise Forbidden("model registration is disabled on this server (enable_model_api)")

    def check_token(self, api: str, authorization: str | None) -> None:
        """401 unless ``authorization`` carries the token of ``api`` (when it has one)."""
        if self.tokens_enabled:
            self.tokens.check(api, authorization)

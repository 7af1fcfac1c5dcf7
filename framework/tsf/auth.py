"""Opt-in bearer-token authorization for the inference and management APIs.

Tokens come from ``auth_token_file`` (``--auth-token-file``) or from ``inference_token`` /
``management_token`` (``TSF_INFERENCE_TOKEN`` / ``TSF_MANAGEMENT_TOKEN``).  The file may be
TorchServe's ``key_file.json`` (``{"inference": {"key": ...}, "management": {"key": ...}}``), a
JSON/YAML mapping ``{inference: ..., management: ...}``, or one line holding a single token for
both APIs.  An API without a token stays open.  Health probes (``/ping``, ``/v2/health/*``) and
the metrics API are never checked.  Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import TsfError, Unauthorized

APIS = ("inference", "management")


@dataclass(frozen=True)
class Tokens:
    """The expected token per API (``None``: that API is open)."""

    inference: bytes | None = None
    management: bytes | None = None

    @property
    def enabled(self) -> bool:
        return self.inference is not None or self.management is not None

    def check(self, api: str, authorization: str | None) -> None:
        """Raise 401 unless ``authorization`` is ``Bearer <the api's token>``."""
        expected = getattr(self, api, None) if api in APIS else None
        if expected is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        realm = f'Bearer realm="tsf {api}"'
        if scheme.lower() != "bearer" or not given.strip():
            raise _unauthorized(f"the {api} API needs 'Authorization: Bearer <token>'", realm)
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise _unauthorized(f"invalid token for the {api} API", realm + ', error="invalid_token"')


def _unauthorized(message: str, challenge: str) -> TsfError:
    error = Unauthorized(message)
    error.headers = {"WWW-Authenticate": challenge}
    return error


def _token_of(value: Any) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("key")
    return str(value).strip().encode() if value else None


def load_tokens(config: Any) -> Tokens:
    """The tokens the configuration asks for (file first, then the two settings)."""
    found: dict[str, bytes | None] = {api: None for api in APIS}
    if config.auth_token_file:
        path = Path(config.auth_token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TsfError(f"cannot read auth_token_file {path}: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError:
            data = yaml.safe_load(text) if ":" in text else text
        if isinstance(data, dict):
            for api in APIS:
                found[api] = _token_of(data.get(api))
        else:
            token = _token_of(str(data).strip().splitlines()[0] if str(data).strip() else "")
            found = {api: token for api in APIS}
        if not any(found.values()):
            raise TsfError(f"auth_token_file {path} holds no token")
    for api in APIS:
        direct = getattr(config, f"{api}_token", "")
        if direct:
            found[api] = direct.strip().encode()
    return Tokens(**found)

"""Management API (port 8081): register, list, describe, scale, set-default, unregister, plugins.

Parameters and response shapes follow TorchServe's management API.
"""

from __future__ import annotations

from typing import Any

from ..config.capture import capture_settings
from ..errors import BadRequest
from ..json_body import json_object, load_json
from ..monitoring.monitor import capture_value
from ..plugins import describe_plugins
from ..serving.manager import ModelManager
from ..serving.manager_types import ManagerResult, RegisterRequest
from .api_handler import ApiHandler, BodyHandler
from .openapi import ManagementOpenAPIHandler

TEXT_PARAMS = ("url", "model_name", "handler", "sha256")
INT_PARAMS = ("batch_size", "max_batch_delay", "initial_workers", "response_timeout",
              "startup_timeout")
BOOL_PARAMS = ("synchronous", "replace")
REGISTER_PARAMS = TEXT_PARAMS + INT_PARAMS + BOOL_PARAMS
_INT_LIMIT = 2**31 - 1


def _bool(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def register_params(query: dict[str, str | None], body: dict[str, Any]) -> dict[str, Any]:
    """Register parameters from the query string and a JSON body (which wins), type-checked.

    Text parameters must be strings, counts integers (or their decimal text), ``synchronous`` and
    ``replace`` booleans (or ``true``/``false``); anything else is a BadRequest naming the
    parameter.
    """
    raw: dict[str, Any] = dict(query)
    raw.update({k: v for k, v in body.items() if k in REGISTER_PARAMS})
    params: dict[str, Any] = {}
    for name in TEXT_PARAMS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"parameter {name} must be a string, got "
                             f"{type(value).__name__}")
        params[name] = value or None
    for name in INT_PARAMS:
        params[name] = _int_param(name, raw.get(name))
    for name, default in zip(BOOL_PARAMS, (True, False)):
        value = raw.get(name)
        if value is not None and not isinstance(value, (bool, str)):
            raise BadRequest(f"parameter {name} must be true or false, got "
                             f"{type(value).__name__}")
        params[name] = _bool(value, default)
    return params


def _int_param(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"parameter {name} must be an integer, got {value!r:.100}")
    if abs(value) > _INT_LIMIT:
        raise BadRequest(f"parameter {name} is out of range (at most {_INT_LIMIT})")
    return value


def _worker_count(value: str | None) -> int | None:
    """A scale call's ``min_worker`` or ``max_worker`` (``None`` when not given)."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest("min_worker and max_worker must be integers") from None


class ManagementHandler(ApiHandler):
    @property
    def manager(self) -> ModelManager:
        return self.services.manager

    def arg(self, name: str) -> str | None:
        value = self.get_query_argument(name, None)
        return value if value is None else value.strip()

    def status(self, code: int, message: str) -> None:
        self.write_json({"status": message}, status=code)

    def reply(self, result: ManagerResult) -> None:
        self.write_json(result.body(), status=result.code)

    def page(self) -> tuple[int, int]:
        """``limit`` and ``next_page_token`` of a paged list (TorchServe's parameters)."""
        try:
            return int(self.arg("limit") or 100), int(self.arg("next_page_token") or 0)
        except ValueError:
            raise BadRequest("limit and next_page_token must be integers") from None


class ModelsHandler(ManagementHandler, BodyHandler):
    """``GET /models`` (paged list) and ``POST /models`` (register)."""

    def get(self) -> None:
        self.write_json(self.services.dataplane.list_models(*self.page()))

    async def post(self) -> None:
        self.services.dataplane.check_model_api()
        ctype = self.request.headers.get("Content-Type", "")
        body = self.body()
        data = json_object(body) if ctype.startswith("application/json") and body else {}
        params = register_params({k: self.arg(k) for k in REGISTER_PARAMS}, data)
        url = params.pop("url") or ""
        capture = capture_value(self.arg("capture"), data)
        settings = capture_settings(capture)  # a malformed value: 400 before any download
        if settings is not None:
            self.services.monitor.check(settings)
        self.reply(await self.manager.register(RegisterRequest(url, capture=capture, **params)))


class ModelHandler(ManagementHandler, BodyHandler):
    """``/models/{m}[/{v}]``: describe (GET), scale (PUT), unregister (DELETE).

    A PUT with a ``capture`` parameter (query, or the JSON body's key) changes the version's
    data capture; it scales only when ``min_worker`` or ``max_worker`` is given too.
    """

    async def get(self, name: str, version: str | None = None) -> None:
        self.write_json(await self.services.dataplane.describe_models(
            name, version, _bool(self.arg("customized"), False)))

    async def put(self, name: str, version: str | None = None) -> None:
        version = version or self.arg("model_version")
        low, high = _worker_count(self.arg("min_worker")), _worker_count(self.arg("max_worker"))
        body = self.body()
        data = json_object(body) if body and self.request.headers.get(
            "Content-Type", "").startswith("application/json") else {}
        capture = capture_value(self.arg("capture"), data)
        if capture is not None:
            document = self.services.monitor.set_capture(name, version, capture)
            if low is None and high is None:
                self.write_json(document)
                return
        self.reply(await self.manager.scale(name, version, low, high,
                                            _bool(self.arg("synchronous"), False)))

    async def delete(self, name: str, version: str | None = None) -> None:
        self.services.dataplane.check_model_api()
        self.reply(await self.manager.unregister(name, version))


class SetDefaultHandler(ManagementHandler):
    def put(self, name: str, version: str) -> None:
        self.reply(self.manager.set_default(name, version))


class TrafficHandler(ManagementHandler, BodyHandler):
    """``/models/{m}/traffic``: the weighted split between versions (GET, PUT, DELETE)."""

    def get(self, name: str) -> None:
        self.write_json(self.manager.traffic(name))

    def put(self, name: str) -> None:
        self.reply(self.manager.set_traffic(name, load_json(self.body() or b"null")))

    def delete(self, name: str) -> None:
        self.reply(self.manager.clear_traffic(name))


class ShadowHandler(ManagementHandler, BodyHandler):
    """``/models/{m}/shadow``: mirror a share of live requests to a version (GET, PUT,
    DELETE)."""

    def get(self, name: str) -> None:
        self.write_json(self.manager.shadow(name))

    def put(self, name: str) -> None:
        self.reply(self.manager.set_shadow(name, load_json(self.body() or b"null")))

    def delete(self, name: str) -> None:
        self.reply(self.manager.clear_shadow(name))


class ProfileHandler(ManagementHandler):
    """``/models/{m}[/{v}]/profile``: record the next batches (PUT ``?batches=N``), list the
    runs and their files (GET)."""

    def put(self, name: str, version: str | None = None) -> None:
        batches = _int_param("batches", self.arg("batches"))
        self.reply(self.manager.profile(name, version or self.arg("model_version"),
                                        10 if batches is None else batches))

    def get(self, name: str, version: str | None = None) -> None:
        mv = self.manager.registry.get(name, version or self.arg("model_version"))
        base = f"{self.request.protocol}://{self.request.host}/models/{name}/{mv.version}/profile"
        self.write_json(self.manager.profiles.runs(mv, base))


class ProfileFileHandler(ManagementHandler):
    """``/models/{m}/{v}/profile/{run}/{file}``: one trace, ``.prof`` or summary file."""

    def get(self, name: str, version: str, run: str, file: str) -> None:
        mv = self.manager.registry.get(name, version)
        path, ctype = self.manager.profiles.file(mv, run, file)
        self.set_header("Content-Type", ctype)
        self.set_header("Content-Disposition", f'attachment; filename="{file}"')
        self.finish(path.read_bytes())


class PluginsHandler(ManagementHandler):
    def get(self) -> None:
        self.write_json({"plugins": describe_plugins(self.services.pm)})


def routes(options: dict[str, Any]) -> list:
    name = r"([^/]+)"
    return [
        (r"/models", ModelsHandler, options),
        (rf"/models/{name}", ModelHandler, options),
        (rf"/models/{name}/{name}/set-default", SetDefaultHandler, options),
        (rf"/models/{name}/traffic", TrafficHandler, options),
        (rf"/models/{name}/shadow", ShadowHandler, options),
        (rf"/models/{name}/profile", ProfileHandler, options),
        (rf"/models/{name}/{name}/profile", ProfileHandler, options),
        (rf"/models/{name}/{name}/profile/{name}/{name}", ProfileFileHandler, options),
        (rf"/models/{name}/{name}", ModelHandler, options),
        (r"/plugins", PluginsHandler, options),
        (r"/(?:api-description)?", ManagementOpenAPIHandler, options),
    ]

"""The composition root: builds the server's parts (plugins, model manager, metrics, tracing)
and hands them to the protocol adapters, Tornado applications for the inference, management and
metrics APIs (``server/``, one application per distinct address) and the gRPC servers
(``grpc_api/``), all on one loop."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any, Callable

import tornado.httpserver
import tornado.netutil
import tornado.web

from .auth import load_tokens
from .config import tls
from .config.settings import HTTP_DEFAULT_PORTS, Address, ServerConfig, guard_management_address
from .errors import BadRequest
from .dataplane import DataPlane
from .errors import TsfError
from .openai_api.routes import routes as openai_routes
from .monitoring.monitor import Monitor
from .plugins import create_manager
from .jobs.service import JobService
from .server import (inference, jobs, kserve_v1, kserve_v2, management, metrics, monitoring,
                     workflows)
from .server.cors import CorsPolicy
from .server.json_handler import NotFoundHandler
from .server.listener import HTTPListener
from .services import Services
from .serving.lifecycle import Lifecycle
from .serving.llm_folder import register_llm_folder
from .serving.manager import ModelManager
from .serving.manager_types import RegisterRequest
from .config.properties import read_properties
from .serving.snapshot import capture, register_snapshot_models
from .serving.snapshot_store import SnapshotStore, snapshot_folder
from .serving.store_watch import ModelStoreWatcher
from .telemetry.metrics import ServerMetrics
from .telemetry.redaction import redact_target, redact_url
from .telemetry.tracing import create_tracing
from .workflows.manager import WorkflowManager

log = logging.getLogger("tsf")
access_log = logging.getLogger("tsf.access")  # looked up once: getLogger takes a lock

# Bodies are streamed and limited by max_request_size in the handlers (answering 413), so
# Tornado's own cap only needs to stay out of the way.
_TORNADO_BODY_CAP = 1 << 40
ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".zip")
CAPTURE_FLUSH_TIMEOUT = 10.0  # seconds a stop waits for the capture sinks to write what is queued


class TsfServer:
    """Owns the plugin manager, the model manager, metrics and the HTTP listeners."""

    def __init__(self, config: ServerConfig, pm: Any = None) -> None:
        self.tokens = load_tokens(config)
        self.config = config = guard_management_address(config, self.tokens.management is not None)
        self.pm = pm or create_manager()
        observer = None
        if self.pm.hook.tsf_record_metric.get_hookimpls():
            def observer(name: str, kind: str, value: float, labels: dict) -> None:
                self.pm.hook.tsf_record_metric(name=name, kind=kind, value=value, labels=labels)
        self.metrics = ServerMetrics(observer)
        self.pm.hook.tsf_register_metrics(registry=self.metrics.registry)
        self.tracing = create_tracing()
        self.manager = ModelManager(config, self.pm, self.metrics, self.tracing)
        self.workflows = WorkflowManager(self.manager)
        self.lifecycle = Lifecycle()
        self.monitor = Monitor(config, self.manager, self.pm, self.metrics.registry)
        self.jobs = JobService.create(config, self.manager, self.workflows,
                                      self.metrics.registry, self.manager.workspace)
        self.services = Services(
            config=config, manager=self.manager, metrics=self.metrics, pm=self.pm,
            tracing=self.tracing, tokens=self.tokens, workflows=self.workflows,
            dataplane=DataPlane(config, self.manager, self.tokens, self.lifecycle),
            monitor=self.monitor, jobs=self.jobs)
        # TLS key material, read (and checked) before anything starts
        self.key_material = tls.key_material(config) if self._needs_tls() else None
        if config.enable_grpc and config.enable_grpc_ssl and self.key_material is None:
            raise BadRequest("enable_grpc_ssl=true needs private_key_file and certificate_file "
                             "(or a keystore)")
        self._https: ssl.SSLContext | None = None
        self.servers: list[tornado.httpserver.HTTPServer] = []
        self.grpc: Any = None  # GrpcServers when enable_grpc is set
        self._store_watch: asyncio.Future | None = None  # model_store_poll_seconds > 0
        self.ports: dict[str, int] = {}

    def _routes(self) -> dict[str, list]:
        inference_options = dict(services=self.services, api="inference")
        management_options = dict(services=self.services, api="management")
        routes = {
            # OpenAI's /v1/models/{id} answers KServe v1's readiness too: it goes first
            "inference": openai_routes(inference_options) + inference.routes(inference_options)
            + kserve_v1.routes(inference_options) + kserve_v2.routes(inference_options)
            + workflows.inference_routes(inference_options)
            + monitoring.inference_routes(inference_options) + jobs.routes(inference_options),
            "management": workflows.management_routes(management_options)
            + monitoring.management_routes(management_options)
            + management.routes(management_options),
            "metrics": metrics.routes(dict(services=self.services, api="metrics")),
        }
        if self.config.sagemaker:  # SageMaker's routes first: its /models is not TorchServe's
            from .sagemaker.routes import routes as sagemaker_routes

            routes["inference"] = sagemaker_routes(inference_options) + routes["inference"]
        return routes

    def _addresses(self) -> dict[str, Address]:
        """Where the inference, management and metrics APIs listen."""
        return {api: Address.parse(getattr(self.config, f"{api}_address"),
                                   HTTP_DEFAULT_PORTS[api]) for api in HTTP_DEFAULT_PORTS}

    def _needs_tls(self) -> bool:
        return self.config.enable_grpc and self.config.enable_grpc_ssl or any(
            a.scheme == "https" for a in self._addresses().values())

    def _https_context(self) -> ssl.SSLContext:
        """The HTTPS listeners' TLS context (one for all of them, as in TorchServe)."""
        if self._https is None:
            material = self.key_material
            if material is None:
                hosts = [a.host for a in self._addresses().values() if a.scheme == "https"]
                material = tls.self_signed(hosts)
                log.warning("https listener without keystore or private_key_file and "
                            "certificate_file: serving %s, which clients will not trust",
                            tls.describe(material))
            else:
                log.info("TLS from %s", tls.describe(material))
            self._https = tls.server_context(material)
        return self._https

    def _listen(self) -> None:
        """One Tornado app per distinct address: APIs given the same address (KServe's samples
        put inference and management on one port) share one app with both route sets."""
        addresses = self._addresses()
        groups: dict[Any, list[str]] = {}
        for api, address in addresses.items():
            groups.setdefault((address.host, address.port) if address.port else api,
                              []).append(api)  # port 0 asks for a port of its own
        routes = self._routes()
        settings = {"default_handler_class": NotFoundHandler, "compress_response": False,
                    "serve_traceback": False, "log_function": _log_request,
                    "lifecycle": self.lifecycle, "cors": CorsPolicy.from_config(self.config)}
        for apis in groups.values():
            address = addresses[apis[0]]
            if len({addresses[api].scheme for api in apis}) > 1:
                raise BadRequest(f"{' and '.join(apis)} share {address.host}:{address.port} "
                                 "but not the scheme: give them the same one (http or https)")
            app = tornado.web.Application([r for api in apis for r in routes[api]], **settings)
            sockets = tornado.netutil.bind_sockets(address.port, address.host)
            server = HTTPListener(app, max_body_size=_TORNADO_BODY_CAP,
                                  idle_connection_timeout=300,
                                  ssl_options=self._https_context()
                                  if address.scheme == "https" else None)
            server.add_sockets(sockets)
            self.servers.append(server)
            for api in apis:
                self.ports[api] = sockets[0].getsockname()[1]

    def urls(self) -> dict[str, str]:
        addresses = self._addresses()
        urls = {api: f"{addresses[api].scheme}://{addresses[api].host}:{port}"
                for api, port in self.ports.items() if api in addresses}
        if self.grpc is not None:  # gRPC targets are host:port, as grpc.insecure_channel takes
            urls.update({api: f"{a.host}:{a.port}" for api, a in self.grpc.addresses.items()})
        return urls

    async def start(self) -> None:
        """Listen, then register the startup models (their workers load in the background);
        health checks answer 503 until they are registered."""
        self.manager.starting = True
        if self.jobs is not None:  # a store that cannot be used stops the start (exit 2)
            if not self.config.workspace and self.config.job_store.strip() in ("", "sqlite"):
                log.warning("jobs are stored in %s, a temporary workspace: set workspace (or "
                            "--workspace) for them to survive a restart",
                            self.manager.workspace)
            await self.jobs.open()
        self._listen()
        if self.config.enable_grpc:
            from .grpc_api.server import GrpcServers

            self.grpc = GrpcServers(self.services, self.key_material)
            self.ports.update(await self.grpc.start())
        if self.config.llm_model_dir:  # tsf serve --llm (before a snapshot, which may name it)
            await register_llm_folder(self.manager, self.config)
        snapshots = self._snapshot_store()
        latest = snapshots.latest() if snapshots is not None else None
        if latest is not None and latest.config_file == snapshots.config_file:
            log.info("restoring the models of config snapshot %s (load_models and "
                     "model_snapshot of the config are not applied; --ncs skips the snapshot)",
                     latest.path)
            await register_snapshot_models(self.manager, latest.model_snapshot)
        else:
            if latest is not None:
                log.info("config snapshot %s was written for another config file (%s); not "
                         "restored", latest.path, latest.config_file or "none")
            await self._register_startup_models()
        if snapshots is not None:
            self.manager.on_change = lambda: snapshots.save(capture(self.manager))
        if self.config.sagemaker:
            from .sagemaker.models import register_sagemaker_model

            await register_sagemaker_model(self.manager, self.config)
        if self.config.model_store_poll_seconds > 0 and self.config.model_store:
            watcher = ModelStoreWatcher(self.manager, self.config.model_store)
            self._store_watch = asyncio.ensure_future(
                watcher.run(self.config.model_store_poll_seconds))
        for name, url in startup_workflows(self.config):
            asyncio.ensure_future(self._register_startup_workflow(name, url))
        self.manager.starting = False
        if self.jobs is not None:
            self.jobs.start()

    def _snapshot_store(self) -> SnapshotStore | None:
        folder = snapshot_folder(self.config)
        if folder is None:
            return None
        config_file = self.config.ts_config_file
        values = read_properties(config_file) if config_file else {}
        return SnapshotStore(folder, self.config.snapshot_keep, config_file, values)

    async def _register_startup_models(self) -> None:
        """``load_models``, then the config's ``model_snapshot``."""
        for name, url in startup_models(self.config):
            try:
                await self.manager.register(RegisterRequest(url, model_name=name,
                                                            synchronous=False),
                                            loaded_at_startup=True)
            except TsfError as exc:
                log.error("startup model %s (%s) not registered: %s", name or redact_url(url),
                          redact_url(url), exc.message)
                self.manager.startup_failed(name or Path(url).name.split(".")[0], exc.message)
        await register_snapshot_models(self.manager, self.config.model_snapshot)

    async def _register_startup_workflow(self, name: str | None, url: str) -> None:
        """Register a ``load_workflows`` entry in the background; a failure counts in health."""
        try:
            await self.workflows.register(url, name, loaded_at_startup=True)
        except TsfError as exc:
            log.error("startup workflow %s (%s) not registered: %s", name or redact_url(url),
                      redact_url(url), exc.message)
            self.manager.startup_failed(name or Path(url).name.split(".")[0], exc.message)

    async def drain(self, timeout: float | None = None) -> bool:
        """Graceful stop: not ready at once, listeners closed, open requests finished (each
        answer closing its connection), then :meth:`stop`.  False if ``timeout`` (default
        ``graceful_shutdown_timeout``) passed with requests still open: those get a 503."""
        timeout = self.config.graceful_shutdown_timeout if timeout is None else timeout
        self.lifecycle.start_draining()
        self.manager.begin_shutdown()  # the workers finish the drain; none is restarted
        log.info("draining: readiness fails from now on; finishing %d open request(s) within "
                 "%g s", self.lifecycle.open_requests, timeout)
        for server in self.servers:
            server.stop()  # no new connections; the open ones are still served
        grpc_stopped = asyncio.ensure_future(self.grpc.stop(grace=timeout)) \
            if self.grpc is not None else None
        jobs_stopped = asyncio.ensure_future(self.jobs.close(timeout)) \
            if self.jobs is not None else None
        finished = await self.lifecycle.requests_finished(timeout)
        if jobs_stopped is not None:
            await jobs_stopped
        if grpc_stopped is not None:
            await grpc_stopped
        if finished:
            log.info("drained in %.2f s", time.monotonic() - (self.lifecycle.drain_started or 0))
        else:
            log.warning("graceful_shutdown_timeout (%g s) passed with %d request(s) open; they "
                        "are answered 503", timeout, self.lifecycle.open_requests)
        await self.stop()
        return finished

    async def stop(self) -> None:
        """Stop at once: queued and running work is answered 503, workers stop, connections
        close once those answers are written."""
        self.lifecycle.start_stopping()
        if self._store_watch is not None:
            self._store_watch.cancel()
        self.manager.begin_shutdown()
        for server in self.servers:
            server.stop()
        if self.jobs is not None:
            await self.jobs.close()
        if self.grpc is not None:
            await self.grpc.stop()
        await self.manager.shutdown(wait=0)
        await self.workflows.shutdown()
        await asyncio.to_thread(self.monitor.close, CAPTURE_FLUSH_TIMEOUT)  # captured records
        await self.lifecycle.requests_finished(1.0)  # let the 503 answers reach their clients
        for server in self.servers:
            await server.close_all_connections()
        self.tracing.shutdown()

    def ready_info(self) -> dict:
        return {"status": "ready", "ports": self.ports, "urls": self.urls()}


def startup_models(config: ServerConfig) -> list[tuple[str | None, str]]:
    """``[(name or None, url)]`` from ``load_models`` (``all``, ``x.mar``, ``name=x.mar``)."""
    if config.load_models.strip().lower() == "standalone":
        return []
    return _startup_entries(config.load_models, config.model_store,
                            lambda p: p.name.endswith(ARCHIVE_SUFFIXES) or
                            (p / "MAR-INF").is_dir())


def startup_workflows(config: ServerConfig) -> list[tuple[str | None, str]]:
    """``[(name or None, url)]`` from ``load_workflows`` (``all``, ``x.war``, ``name=x.war``)."""
    return _startup_entries(config.load_workflows, config.workflow_store or config.model_store,
                            lambda p: p.name.endswith(".war"))


def _startup_entries(spec: str, model_store: str, in_store: Callable[[Path], bool]
                     ) -> list[tuple[str | None, str]]:
    """A comma- or space-separated list of ``url`` or ``name=url``; ``all``: every entry of the
    model store that ``in_store`` accepts."""
    entries = [e.strip() for e in spec.strip().replace(" ", ",").split(",") if e.strip()]
    if [e.lower() for e in entries] == ["all"]:
        store = Path(model_store) if model_store else None
        if store is None or not store.is_dir():
            return []
        return [(None, p.name) for p in sorted(store.iterdir()) if in_store(p)]
    out: list[tuple[str | None, str]] = []
    for entry in entries:
        name, sep, url = entry.partition("=")
        out.append((name, url) if sep else (None, entry))
    return out


def _log_request(handler: tornado.web.RequestHandler) -> None:
    if access_log.isEnabledFor(logging.INFO):
        request_id = getattr(handler, "request_id", "")
        trace_id = getattr(handler, "trace_id", "")
        access_log.info("%s %s %d %.2fms%s%s", handler.request.method,
                        redact_target(handler.request.uri),
                        handler.get_status(), 1000.0 * handler.request.request_time(),
                        f" request_id={request_id}" if request_id else "",
                        f" trace_id={trace_id}" if trace_id else "",
                        extra={"request_id": request_id, "trace_id": trace_id,
                               "status": handler.get_status()})


def ready_line(info: dict) -> str:
    return "tsf ready " + json.dumps(info)


async def serve_forever(server: TsfServer, ready_file: str | None = None,
                        stop_event: asyncio.Event | None = None) -> None:
    await server.start()
    info = server.ready_info()
    print(ready_line(info), flush=True)
    if ready_file:
        tmp = Path(ready_file + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(ready_file)
    stop_event = stop_event or asyncio.Event()
    await stop_event.wait()
    await server.drain()

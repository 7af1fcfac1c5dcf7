"""Model lifecycle: register (archives from :mod:`tsf.archives.sources`), roll out a new archive,
scale (and autoscale), set the default version, traffic split and shadow, unregister; submitting
requests; health.

Each version's machinery comes from :mod:`tsf.serving.version_builder`, a rolling update's steps
from :mod:`tsf.serving.rollout`.  Changes take typed values and answer a
:class:`~tsf.serving.manager_types.ManagerResult`: the status and message of TorchServe's
management API.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pluggy

from ..archives.reader import Limits, ModelArchive, check_paths, check_version, open_archive
from ..archives.sources import ArchiveSources
from ..batching.background import BackgroundJob
from ..batching.queue import Job
from ..config.autoscale import autoscale_settings
from ..config.capture import CaptureSettings, capture_settings
from ..config.models_key import parse_models
from ..config.settings import ModelSettings, ServerConfig, check_worker_cap, model_settings
from ..errors import BadRequest, Conflict, Forbidden, ModelLoadError, ServiceUnavailable, TsfError
from ..telemetry.metrics import ServerMetrics
from ..telemetry.tracing import Tracing
from ..workers.messages import DESCRIBE, Request
from ..workers.requirements_env import model_environment
from . import rollout
from .autoscale import decisions_counter
from .health import Health, assess
from .manager_types import ManagerResult, RegisterRequest
from .observer import live_workers
from .profiling import Profiles
from .registry import ModelVersion, Registry
from .shadow import Shadowing, parse_rule
from .traffic import ROUTING_HEADER, TrafficSplit, parse_weights, routing_key
from .version_builder import VersionBuilder

log = logging.getLogger("tsf.manager")

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
PROCESSING = "Processing worker updates..."  # an asynchronous change's answer (202)


class ModelManager:
    """Owns the registry and every model version's pool, queue and batcher."""

    def __init__(self, config: ServerConfig, pm: pluggy.PluginManager,
                 metrics: ServerMetrics, tracing: Tracing | None = None) -> None:
        self.config = config
        self.pm = pm
        self.metrics = metrics
        self.tracing = tracing or Tracing()
        self.registry = Registry()
        metrics.worker_figures.workers = functools.partial(live_workers, self.registry)
        root = Path(config.workspace) if config.workspace else \
            Path(tempfile.mkdtemp(prefix="tsf-workspace-"))
        self.workspace = root
        self.sources = ArchiveSources(config, pm, root)
        self.limits = Limits(max_bytes=config.max_archive_size,
                             max_files=config.max_archive_files)
        self._reserved: set[tuple[str, str]] = set()
        self.failed_startup_models: dict[str, str] = {}  # name -> why it did not load
        # versions whose workers are being started, with how many loads/scales are under way
        self._loading: Counter[tuple[str, str]] = Counter()
        # set by the server while it registers its startup models: not ready until then
        self.starting = False
        self.builder = VersionBuilder(config, self.registry, metrics, self.tracing,
                                      decisions_counter(metrics.registry))
        self.profiles = Profiles(root / "profiles")
        self.shadowing = Shadowing(metrics.registry)
        self.configured = parse_models(config.models)  # TorchServe's models key
        # set by the server when config snapshots are on: called with no argument after each
        # management change (not while the server starts or once it stops)
        self.on_change: Any = None
        self._stopping = False
        self.owners: dict[str, str] = {}  # model name -> the workflow it belongs to
        self.shared_models: set[str] = set()  # workflow models that take direct requests too
        # checks a version's capture settings against the installed sinks (set by the server)
        self.check_capture: Callable[[CaptureSettings], None] | None = None

    # --- register ---------------------------------------------------------------------------
    async def register(self, request: RegisterRequest, *, loaded_at_startup: bool = False
                       ) -> ManagerResult:
        """Register the archive at ``request.url``; with ``replace``, an archive for a version
        that is already registered replaces it by a rolling update (see :meth:`_roll`)."""
        if not request.url:
            raise BadRequest("Parameter url is required.")
        fetched = await self.sources.fetch(request.url, request.sha256)
        try:
            archive: ModelArchive = await asyncio.to_thread(
                open_archive, fetched.path, self.workspace / "models", self.limits)
        except BaseException:
            fetched.discard_fresh()
            raise
        owned = archive.model_dir if archive.model_dir != fetched.path else None
        try:
            return await self._register_archive(request, archive, owned, loaded_at_startup)
        except BaseException:
            if owned is not None and not any(mv.owned_dir == owned for mv in self.registry):
                shutil.rmtree(owned, ignore_errors=True)
            fetched.discard_fresh()
            raise

    async def register_unpacked(self, request: RegisterRequest, archive: ModelArchive, *,
                                loaded_at_startup: bool = False) -> ManagerResult:
        """Register an archive already unpacked whose folder stays with the caller (a
        workflow's function node); ``request.url`` only names it."""
        check_paths(archive)
        return await self._register_archive(request, archive, None, loaded_at_startup)

    async def _register_archive(self, request: RegisterRequest, archive: ModelArchive,
                                owned: Path | None, loaded_at_startup: bool) -> ManagerResult:
        url, handler = request.url, request.handler
        name = request.model_name or archive.model_name or Path(url).name.split(".")[0]
        if not MODEL_NAME.fullmatch(name):
            raise BadRequest(f"invalid model name {name!r}: use letters, digits, '_', '-', '.'")
        version = check_version(archive.model_version)  # an unpacked archive's too
        if handler:
            archive.model["handler"] = handler
            check_paths(archive)
        key = (name, version)
        if key in self._reserved or (self.registry.exists(name, version) and not request.replace):
            raise Conflict(f"Model version {version} is already registered for model {name}"
                           + ("" if key in self._reserved else
                              "; add replace=true to roll the new archive out in its place"))
        settings = model_settings(self.config, archive.model_config, request.settings(),
                                  self.configured.settings(name, version))
        settings.autoscale = autoscale_settings(self.config, archive.model_config)
        if request.capture is not None:
            settings.capture = capture_settings(request.capture)
        if settings.capture is not None and self.check_capture is not None:
            self.check_capture(settings.capture)
        if self.registry.exists(name, version):
            return await self._roll(self.registry.get(name, version), url, archive, owned,
                                    settings, request.synchronous)
        self._reserved.add(key)
        try:
            python_path = await model_environment(archive, url, self.config, self.workspace)
            mv = self._build(name, version, url, archive, settings, owned, loaded_at_startup)
            if python_path is not None:
                mv.pool.spec["python_path"] = [str(python_path)]
            self.registry.add(mv)
            if self.configured.is_default(name, version):
                self.registry.set_default(name, version)
        finally:
            self._reserved.discard(key)
        workers = settings.min_workers
        if workers <= 0:
            await self._changed()
            return ManagerResult(200, f'Model "{name}" Version: {version} registered with 0 '
                                 "initial workers. Use scale workers API to add workers for the "
                                 "model.")
        self._loading[key] += 1  # before any await: an unregister from now on gets 409
        if not request.synchronous:
            asyncio.ensure_future(self._scale_or_unregister(mv, workers))
            await self._changed()
            return ManagerResult(202, PROCESSING)
        await self._scale_or_unregister(mv, workers, raise_errors=True)
        await self._changed()
        return ManagerResult(200, f'Model "{name}" Version: {version} registered with {workers} '
                             "initial workers")

    # --- rolling update -----------------------------------------------------------------------
    async def _roll(self, old: ModelVersion, url: str, archive: ModelArchive,
                    owned: Path | None, settings: ModelSettings, synchronous: bool
                    ) -> ManagerResult:
        """Replace a serving version's archive by a rolling update (see :mod:`tsf.serving.rollout`);
        the version is reserved until it is done."""
        key = (old.name, old.version)
        if self._loading[key] > 0:
            raise Conflict(f"model {old.name} version {old.version} is being loaded or scaled; "
                           "retry the update when that finishes")
        # the version keeps its worker settings; only the archive changes
        settings.min_workers, settings.max_workers = old.settings.min_workers, \
            old.settings.max_workers
        workers = old.pool.target
        mv = self._build(old.name, old.version, url, archive, settings, owned,
                         old.loaded_at_startup)
        self._reserved.add(key)  # released by _roll_out
        self._loading[key] += 1
        if not synchronous:
            asyncio.ensure_future(self._roll_out(old, mv, workers, raise_errors=False))
            return ManagerResult(202, PROCESSING)
        await self._roll_out(old, mv, workers)
        await self._changed()
        return ManagerResult(200, f'Model "{old.name}" Version: {old.version} updated to {url} '
                             f"with {workers} workers")

    async def _roll_out(self, old: ModelVersion, mv: ModelVersion, workers: int,
                        raise_errors: bool = True) -> None:
        key = (old.name, old.version)
        try:
            await rollout.replace(self.registry, old, mv, workers)
        except ModelLoadError:
            if raise_errors:
                raise
            return
        finally:
            self._reserved.discard(key)
            self._loading -= Counter([key])
        await rollout.retire(self.registry, old)

    async def _scale_or_unregister(self, mv: ModelVersion, workers: int,
                                   raise_errors: bool = False) -> None:
        """Start the first workers (the caller marked the version as loading)."""
        try:
            await mv.pool.scale(workers)
        except ModelLoadError as exc:
            log.error("model %s version %s failed to load: %s", mv.name, mv.version, exc)
            if mv.loaded_at_startup:
                self.startup_failed(mv.name, exc.message)
            await self._remove(mv, ServiceUnavailable(f"model {mv.name} failed to load"))
            if not raise_errors:  # else the caller's answer is the failure
                await self._changed()
            if raise_errors:
                raise ModelLoadError(f"Failed to start workers for model {mv.name} version "
                                     f"{mv.version}: {exc.message}") from None
        finally:
            self._loading -= Counter([(mv.name, mv.version)])

    def _build(self, name: str, version: str, url: str, archive: ModelArchive,
               settings: ModelSettings, owned: Path | None, loaded_at_startup: bool
               ) -> ModelVersion:
        """A version ready to register (see :class:`~tsf.serving.version_builder.VersionBuilder`),
        whose autoscaler waits while a load or scale call is under way."""
        mv = self.builder.build(name, version, url, archive, settings, owned, loaded_at_startup,
                                paused=lambda: self._loading[name, version] > 0)
        # where enable_pytorch_profiler writes (tsf.runtime.profiler)
        mv.pool.spec["profile_dir"] = str(self.profiles.folder(name, version))
        return mv

    def profile(self, name: str, version: str | None, batches: int) -> ManagerResult:
        """Record the next ``batches`` batches of each worker (see tsf.serving.profiling)."""
        return self.profiles.start(self.registry.get(name, version), batches)

    # --- scale / default / unregister -------------------------------------------------------
    async def scale(self, name: str, version: str | None, min_worker: int | None,
                    max_worker: int | None, synchronous: bool) -> ManagerResult:
        """Set the version's worker range and start or stop workers to reach ``min_worker``
        (1 when ``None``); ``max_worker`` (``min_worker`` when ``None``) bounds autoscaling."""
        low = 1 if min_worker is None else min_worker
        high = low if max_worker is None else max_worker
        if low < 0:
            raise BadRequest("min_worker must be >= 0")
        if high < low:
            raise BadRequest("max_worker cannot be less than min_worker.")
        check_worker_cap(self.config, low)
        mv = self.registry.get(name, version)
        mv.settings.min_workers, mv.settings.max_workers = low, high
        self._loading[mv.name, mv.version] += 1
        if not synchronous:
            asyncio.ensure_future(self._scale_logged(mv, low))
            await self._changed()
            return ManagerResult(202, PROCESSING)
        try:
            await mv.pool.scale(low)
        except ModelLoadError as exc:
            raise ModelLoadError(f"Failed to start workers: {exc.message}") from None
        finally:
            self._loading -= Counter([(mv.name, mv.version)])
        await self._changed()
        message = f"Workers scaled to {low} for model: {name}"
        if version is not None:
            message += f", version: {version}"
        return ManagerResult(200, message)

    async def _scale_logged(self, mv: ModelVersion, target: int) -> None:
        try:
            await mv.pool.scale(target)
        except TsfError as exc:
            log.error("scaling %s to %d workers failed: %s", mv.name, target, exc)
        finally:
            self._loading -= Counter([(mv.name, mv.version)])

    def set_traffic(self, name: str, document: Any) -> ManagerResult:
        """Set the model's traffic split from a ``{"version": weight}`` object."""
        versions = [mv.version for mv in self.registry.versions(name)]
        self.registry.set_split(name, TrafficSplit(parse_weights(document, versions)))
        log.info("traffic split of model %s set to %s", name, self.registry.split(name).weights)
        self._changed_soon()
        return ManagerResult(document=self.traffic(name))

    def clear_traffic(self, name: str) -> ManagerResult:
        self.registry.set_split(name, None)
        log.info("traffic split of model %s removed", name)
        self._changed_soon()
        return ManagerResult(document=self.traffic(name))

    def traffic(self, name: str) -> dict:
        """The model's split as the management API shows it."""
        split = self.registry.split(name)
        return {"modelName": name, "defaultVersion": self.registry.default_version(name),
                "routingHeader": ROUTING_HEADER,
                "weights": split.weights if split else None,
                "percentages": split.percentages() if split else None}

    def set_shadow(self, name: str, document: Any) -> ManagerResult:
        """Mirror a share of ``name``'s live requests to a version (``{"version", "percent"}``)."""
        versions = [mv.version for mv in self.registry.versions(name)]
        rule = parse_rule(document, versions)
        self.shadowing.rules[name] = rule
        log.info("shadow traffic of model %s: %g%% to version %s", name, rule.percent,
                 rule.version)
        return ManagerResult(document=self.shadow(name))

    def clear_shadow(self, name: str) -> ManagerResult:
        self.registry.get(name)
        self.shadowing.forget(name)
        return ManagerResult(document=self.shadow(name))

    def shadow(self, name: str) -> dict:
        """The model's shadow rule as the management API shows it."""
        self.registry.get(name)
        rule = self.shadowing.rules.get(name)
        return {"modelName": name, "shadow": rule.to_dict() if rule else None}

    def set_default(self, name: str, version: str) -> ManagerResult:
        self.registry.set_default(name, version)
        self._changed_soon()
        return ManagerResult(200, f'Default version successfully updated for model "{name}" '
                             f'to "{version}"')

    async def unregister(self, name: str, version: str | None, owner: str | None = None
                         ) -> ManagerResult:
        mv = self.registry.get(name, version)
        if self.owners.get(name, owner) != owner:
            raise Conflict(f"model {name} belongs to workflow {self.owners[name]}; unregister "
                           "the workflow instead")
        self.registry.check_removable(name, mv.version)
        if self._loading[mv.name, mv.version] > 0:
            raise Conflict(f"model {name} version {mv.version} is being loaded or scaled; "
                           "retry the unregister when that finishes")
        await self._remove(mv, ServiceUnavailable(f"model {name} was unregistered"))
        await self._changed()
        return ManagerResult(200, f'Model "{name}" unregistered')

    async def _remove(self, mv: ModelVersion, error: TsfError, wait: float | None = None
                      ) -> None:
        if self.registry.get_exact(mv.name, mv.version) is mv:
            self.registry.remove(mv.name, mv.version)
            self.shadowing.forget(mv.name, mv.version)
        await mv.batcher.stop(error, wait)
        await mv.pool.close()
        mv.remove_files()

    async def _changed(self) -> None:
        """A management change is done: write a config snapshot (when they are on)."""
        if self.on_change is not None and not self.starting and not self._stopping:
            try:
                await self.on_change()
            except OSError as exc:  # the change stands; the log says it is not saved
                log.error("config snapshot not written: %s", exc)

    def _changed_soon(self) -> None:
        """:meth:`_changed` for a change made outside a coroutine."""
        if self.on_change is not None and not self.starting and not self._stopping:
            asyncio.ensure_future(self._changed())

    def begin_shutdown(self) -> None:
        """No worker is started or restarted from now on (call it as soon as the drain, or a
        stop, begins); no snapshot is written either: the models removed while stopping stay in
        the last."""
        self._stopping = True
        for mv in self.registry:
            mv.pool.stop_restarting()

    async def shutdown(self, wait: float | None = None) -> None:
        """Remove every model; running batches get ``wait`` seconds before they fail (503)."""
        self.begin_shutdown()  # before any await
        error = ServiceUnavailable("the server is shutting down; retry on another replica")
        await asyncio.gather(*(self._remove(mv, error, wait) for mv in list(self.registry)),
                             return_exceptions=True)

    def kill_workers(self) -> None:
        """SIGKILL every worker at once (a second stop signal: no drain, no wait)."""
        for mv in list(self.registry):
            for worker in list(mv.pool.workers.values()):
                worker.kill()

    # --- requests ---------------------------------------------------------------------------
    def submit(self, name: str, version: str | None, request: Request, trace: Any = None,
               workflow: str | None = None) -> tuple[ModelVersion, Job]:
        """Queue one request on the version that serves it (see :meth:`Registry.route`)."""
        owner = self.owners.get(name)
        if owner is not None and owner != workflow and name not in self.shared_models \
                and request.kind != DESCRIBE:
            raise Forbidden(f"model {name} belongs to workflow {owner}: send requests to "
                            f"/wfpredict/{owner} (or mark the model shared: true in the spec)")
        job = Job(request, asyncio.get_running_loop().create_future(), trace,
                  label_version=version or "default")
        mv = self.registry.route(name, version, routing_key(job.request.headers))
        if mv.pool.target == 0 and mv.pool.live_count == 0:
            raise ServiceUnavailable(
                f"model {name} has no workers; add some with PUT /models/{name}?min_worker=1")
        mv.batcher.submit(job)
        self.shadowing.mirror(self.registry, mv.version, job, name)
        return mv, job

    def submit_background(self, name: str, version: str | None, request: Request,
                          workflow: str | None = None, on_start: Any = None
                          ) -> tuple[ModelVersion, Job]:
        """Queue a stored job's request at background priority on the version that serves it
        (see :mod:`tsf.batching.background`); it is not mirrored to a shadow.  ``on_start`` is
        called when a worker is sent it."""
        owner = self.owners.get(name)
        if owner is not None and owner != workflow and name not in self.shared_models:
            raise Forbidden(f"model {name} belongs to workflow {owner}: submit jobs to the "
                            f"workflow (or mark the model shared: true in the spec)")
        mv = self.registry.route(name, version, routing_key(request.headers))
        if mv.pool.target == 0 and mv.pool.live_count == 0:
            raise ServiceUnavailable(
                f"model {name} has no workers; add some with PUT /models/{name}?min_worker=1")
        job = BackgroundJob(request, asyncio.get_running_loop().create_future(),
                            label_version=version or "default", on_start=on_start)
        mv.batcher.submit_background(job, self.config.job_share)
        return mv, job

    def startup_failed(self, name: str, reason: str) -> None:
        """Remember that startup model ``name`` did not load (health reports it)."""
        self.failed_startup_models[name] = reason

    def health_report(self) -> Health:
        """The server's health by the rule in :mod:`tsf.serving.health`."""
        return assess(self.registry, self.failed_startup_models, self.starting)

    def health(self) -> tuple[bool, list[str]]:
        """(able to serve every model, what is wrong): Healthy or Degraded is able."""
        report = self.health_report()
        return report.ok, report.problems()

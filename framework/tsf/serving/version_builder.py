"""The machinery that serves one model version, wired together: the worker pool and the spec its
workers load, the bounded queue, the batcher, the autoscaler, and the
:class:`~tsf.serving.observer.VersionObserver` that records what they do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prometheus_client import Counter

from ..archives.reader import ModelArchive
from ..batching.batcher import Batcher
from ..batching.engine_lane import EngineLane
from ..batching.queue import BatchQueue
from ..batching.sequences import SequenceBatcher, SequenceSettings
from ..config.settings import ModelSettings, ServerConfig
from ..errors import BadRequest
from ..generation.handler import DEFAULT_MAX_SEQUENCES, ENGINE_HANDLERS, engine_options
from ..runtime.handler_metrics import declared_metrics
from ..telemetry.metrics import ServerMetrics
from ..telemetry.tracing import Tracing
from ..workers.engine_worker import EngineWorker
from ..workers.pool import WorkerPool
from .autoscale import Autoscaler, autoscale
from .generation_observer import GenerationObserver
from .observer import VersionObserver
from .registry import ModelVersion, Registry


class VersionBuilder:
    """Builds model versions with one server's config, registry, metrics and tracing."""

    def __init__(self, config: ServerConfig, registry: Registry, metrics: ServerMetrics,
                 tracing: Tracing, decisions: Counter) -> None:
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.tracing = tracing
        self.decisions = decisions  # the autoscaler's tsf_autoscale_decisions counter

    def build(self, name: str, version: str, url: str, archive: ModelArchive,
              settings: ModelSettings, owned: Path | None, loaded_at_startup: bool,
              paused: Callable[[], bool]) -> ModelVersion:
        """A version whose batcher and autoscaler run (the autoscaler decides nothing while
        ``paused()``), with no worker yet; the caller registers it and starts its workers."""
        config, options = self.config, settings.options
        engine = engine_settings(archive, settings)
        spec = {"model_name": name, "model_version": version, "model_dir": str(archive.model_dir),
                "manifest": archive.manifest, "model_config": archive.model_config,
                "handler": archive.handler, "batch_size": settings.batch_size,
                "model_metrics": declared_metrics(config.metrics_config),
                "sequence_headers": [config.ts_header_key_sequence_id.lower(),
                                     config.ts_header_key_sequence_start.lower(),
                                     config.ts_header_key_sequence_end.lower()]}
        if engine is not None:  # the worker runs the engine loop (asyncCommunication)
            spec["engine"] = engine
            spec["model_config"] = dict(archive.model_config,
                                        maxNumSequence=engine["max_sequences"])
        pool = WorkerPool(spec, startup_timeout=settings.startup_timeout,
                          threads_per_worker=config.number_of_threads_per_worker,
                          backoff_max=config.worker_restart_backoff_max,
                          memory_limit=settings.worker_memory_limit_mb * 2**20,
                          stall_seconds=min(settings.response_timeout,
                                            config.worker_stall_seconds),
                          max_retry_seconds=options.max_retry_timeout_s,
                          pipeline_depth=config.worker_pipeline_depth)
        queue = BatchQueue(options.job_queue_size or config.job_queue_size)
        autoscaler = Autoscaler(settings.autoscale)
        observer_class = VersionObserver if engine is None else GenerationObserver
        observer = observer_class(name, version, queue=queue, pool=pool, autoscaler=autoscaler,
                                  registry=self.registry, metrics=self.metrics,
                                  tracing=self.tracing)
        pool.on_change = observer.workers_changed
        pool.on_memory_restart = observer.memory_restart
        batcher: Batcher | SequenceBatcher | EngineLane
        if engine is not None:
            pool.worker_class = EngineWorker
            batcher = EngineLane(queue, pool, max_sequences=engine["max_sequences"],
                                 response_timeout=settings.response_timeout,
                                 observer=observer,  # type: ignore[arg-type]
                                 client_timeout_ms=options.client_timeout_ms)
        elif options.sequence_batching:
            batcher = SequenceBatcher(queue, pool, batch_size=settings.batch_size,
                                      max_batch_delay_ms=settings.max_batch_delay,
                                      response_timeout=settings.response_timeout,
                                      settings=self._sequences(settings), observer=observer,
                                      stage_stamps=self.tracing.enabled)
        else:
            batcher = Batcher(queue, pool, batch_size=settings.batch_size,
                              max_batch_delay_ms=settings.max_batch_delay,
                              response_timeout=settings.response_timeout, observer=observer,
                              stage_stamps=self.tracing.enabled,
                              client_timeout_ms=options.client_timeout_ms,
                              job_ticket=options.use_job_ticket)
        mv = ModelVersion(name=name, version=version, url=url, archive=archive,
                          settings=settings, pool=pool, queue=queue, batcher=batcher,
                          loaded_at_startup=loaded_at_startup, owned_dir=owned,
                          autoscaler=autoscaler)
        batcher.start()
        pool.spawn(autoscale(mv, config, self.decisions, paused=paused))
        return mv

    def _sequences(self, settings: ModelSettings) -> SequenceSettings:
        """A sequence model's settings (maxNumSequence defaults to batch size x max workers,
        as TorchServe's docs say)."""
        options, config = settings.options, self.config
        return SequenceSettings(
            max_sequences=options.max_num_sequence or
            settings.batch_size * max(settings.max_workers, settings.min_workers, 1),
            max_queued=options.max_sequence_job_queue_size,
            max_idle_s=options.sequence_max_idle_ms / 1000.0,
            timeout_s=options.sequence_timeout_ms / 1000.0,
            id_header=config.ts_header_key_sequence_id.lower(),
            start_header=config.ts_header_key_sequence_start.lower(),
            end_header=config.ts_header_key_sequence_end.lower())


def engine_settings(archive: ModelArchive, settings: ModelSettings) -> dict | None:
    """How the workers of an engine model run (None for any other model): a 400 where
    model-config asks for what its handler cannot do."""
    options = settings.options
    if archive.handler not in ENGINE_HANDLERS:
        for key, asked in (("continuousBatching", options.continuous_batching),
                           ("asyncCommunication", options.async_communication)):
            if asked:
                raise BadRequest(f"model-config.yaml: {key} needs a generation engine (handler "
                                 f"{' or '.join(ENGINE_HANDLERS)}); handler "
                                 f"{archive.handler or 'base'} answers batch by batch")
        return None
    if options.sequence_batching:
        raise BadRequest("model-config.yaml: sequenceBatching does not apply to a generation "
                         "engine, which keeps each request's state itself")
    handler = engine_options(archive.model_config, archive.handler)
    vllm = handler.get("vllm_engine_config")
    max_sequences = options.max_num_sequence or handler.get("max_num_seqs") or \
        (vllm.get("max_num_seqs") if isinstance(vllm, dict) else None) or \
        (settings.batch_size if settings.batch_size > 1 else DEFAULT_MAX_SEQUENCES)
    if isinstance(max_sequences, bool) or not isinstance(max_sequences, int) \
            or max_sequences < 1:
        raise BadRequest(f"model-config.yaml: max_num_seqs must be an integer >= 1, got "
                         f"{max_sequences!r:.60}")
    return {"max_sequences": max_sequences, "engine": str(handler["engine"])}

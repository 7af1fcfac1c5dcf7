"""Server configuration: defaults < config file < ``TS_*`` < ``TSF_*`` environment < SageMaker
variables < command line.

Keys are TorchServe's ``config.properties`` keys where one exists (``inference_address``,
``model_store``, ``job_queue_size``, ...).  The environment uses the upper-cased key with a
``TSF_`` prefix (``TSF_JOB_QUEUE_SIZE=50``); TorchServe's ``TS_<KEY>`` variables apply too when
the config file sets ``enable_envvars_config=true``, as in TorchServe.  In SageMaker mode the
container's ``SAGEMAKER_*`` variables are read as well (see :mod:`tsf.config.sagemaker`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from ..errors import BadRequest

if TYPE_CHECKING:
    from .autoscale import AutoscaleSettings
from .capture import CaptureSettings, capture_settings
from .model_options import ModelOptions, model_options
from .properties import read_properties
from .torchserve_keys import check_torchserve_keys

log = logging.getLogger("tsf")


@dataclass
class ServerConfig:
    """Every server setting, with secure defaults (loopback only, remote URLs refused)."""

    inference_address: str = "http://127.0.0.1:8080"
    management_address: str = "http://127.0.0.1:8081"
    metrics_address: str = "http://127.0.0.1:8082"
    model_store: str = ""
    load_models: str = ""
    load_workflows: str = ""  # .war files of the workflow store to register at start (or all)
    workflow_store: str = ""  # where .war files are read from (default: the model store)
    workspace: str = ""
    default_workers_per_model: int = 1
    job_queue_size: int = 100
    batch_size: int = 1
    max_batch_delay: int = 100
    default_response_timeout: int = 120
    default_startup_timeout: int = 120
    max_request_size: int = 6553500
    max_response_size: int = 6553500
    body_idle_timeout: float = 30.0  # seconds a request body may stall before a 408
    max_archive_size: int = 4 * 1024**3
    max_archive_files: int = 10000
    allowed_urls: str = ""
    number_of_threads_per_worker: int = 0
    enable_model_api: bool = True
    worker_restart_backoff_max: float = 30.0
    worker_stall_seconds: float = 30.0  # a batch running longer: the worker counts as not serving
    worker_memory_limit_mb: int = 0     # resident memory per worker; 0: no limit
    worker_pipeline_depth: int = 2      # batches sent to a worker at once (1: one at a time)
    max_workers_per_model: int = 32     # 0: no limit
    # worker autoscaling between min and max workers (see tsf.serving.autoscale)
    autoscale_interval_s: float = 0.5
    autoscale_target_queue_ms: float = 100.0
    autoscale_scale_up_after_s: float = 2.0
    autoscale_scale_down_idle_s: float = 30.0
    model_store_poll_seconds: float = 0.0  # > 0: roll out archives changed in the model store
    install_py_dep_per_model: bool = False  # install archives' requirements files
    install_py_dep_for_remote_models: bool = False  # ... also for archives from remote URLs
    log_level: str = "INFO"
    log_format: str = "text"
    event_loop: str = "auto"   # auto (uvloop when installed) | asyncio | uvloop
    auth_token_file: str = ""
    inference_token: str = field(default="", repr=False)
    management_token: str = field(default="", repr=False)
    download_timeout: float = 60.0
    graceful_shutdown_timeout: float = 30.0
    enable_grpc: bool = False
    grpc_inference_address: str = "127.0.0.1:7070"
    grpc_management_address: str = "127.0.0.1:7071"
    grpc_inference_port: int = 0   # TorchServe's key; replaces the address's port when set
    grpc_management_port: int = 0
    metrics_config: str = ""  # TorchServe's metrics.yaml: its model_metrics are declared
    # TLS (tsf.config.tls): https:// addresses and enable_grpc_ssl take their key from these
    keystore: str = ""                   # a PKCS12 file (wins over the PEM files)
    keystore_pass: str = field(default="changeit", repr=False)
    keystore_type: str = "PKCS12"
    private_key_file: str = ""           # PEM, unencrypted
    certificate_file: str = ""           # PEM, the server's certificate first, then its chain
    enable_grpc_ssl: bool = False
    # CORS headers on every HTTP answer (tsf.server.cors)
    cors_allowed_origin: str = ""
    cors_allowed_methods: str = ""
    cors_allowed_headers: str = ""
    # data capture and monitoring (models opt in with capture: in model-config.yaml)
    capture_dir: str = ""               # the jsonl sink's folder; "": <workspace>/capture
    capture_buffer_records: int = 10000  # records queued per sink (and for analysis)
    capture_buffer_mb: int = 64          # body bytes queued per sink
    monitoring_max_predictions: int = 100000  # predictions kept per model for feedback
    # TorchServe / KServe layout keys
    enable_envvars_config: bool = False  # TS_<KEY> variables override the config file
    service_envelope: str = ""           # kserve / kservev2: /v1 and /v2 are always served
    model_snapshot: str = ""             # TorchServe's JSON list of startup models
    models: str = ""                     # TorchServe's per-model settings (config.models_key)
    # config snapshots (tsf.serving.snapshot_store): written after each management change and
    # restored at start; ts_config_file is set by the command line (--ts-config)
    snapshot_dir: str = ""               # default: {workspace}/config (none: no snapshots)
    snapshot_keep: int = 10
    no_config_snapshots: bool = False    # --ncs / --no-config-snapshots
    ts_config_file: str = ""
    # stateful sequences (tsf.batching.sequences): the request headers that carry them
    ts_header_key_sequence_id: str = "ts_request_sequence_id"
    ts_header_key_sequence_start: str = "ts_request_sequence_start"
    ts_header_key_sequence_end: str = "ts_request_sequence_end"
    # a Hugging Face model folder served by a generation engine at start (tsf serve --llm)
    llm_model_dir: str = ""
    llm_name: str = ""                   # default: the folder's name
    llm_engine: str = "transformers"     # or vllm
    # SageMaker container mode (tsf serve --sagemaker, or TSF_SAGEMAKER=true)
    sagemaker: bool = False
    sagemaker_model_dir: str = "/opt/ml/model"
    sagemaker_multi_model_dir: str = "/opt/ml/models"
    sagemaker_multi_model: bool = False
    sagemaker_install_requirements: bool = False
    # asynchronous jobs and their store (see tsf.jobs and docs/jobs.md)
    job_store: str = "sqlite"          # sqlite | sqlite:///path.db | redis://... | off
    job_max_attempts: int = 3          # runs of a job whose worker or replica died, at most
    job_ttl: float = 86400.0           # s a job and its result are kept (from the end)
    job_store_max_mb: int = 1024       # inputs and results stored, at most; 507 when full
    job_inline_bytes: int = 65536      # larger inputs and results go to files beside SQLite
    job_share: float = 0.0             # share of a model's workers jobs may hold while online
                                       # traffic flows (with none, they may use all)
    job_callback_secret: str = field(default="", repr=False)  # HMAC-SHA256 key of callbacks
    job_callback_retries: int = 5      # deliveries of a callback after the first, at most
    job_callback_backoff: float = 1.0  # s before the first retry; doubles each time
    job_visibility_timeout: float = 30.0  # s a silent replica keeps its jobs (Redis)
    job_replica_id: str = ""           # this replica's name in a Redis store (default: host-pid)

    @property
    def allowed_url_patterns(self) -> list[str]:
        return [part.strip() for part in self.allowed_urls.split(",") if part.strip()]

    def with_overrides(self, values: Mapping[str, Any]) -> "ServerConfig":
        """A copy with ``values`` (strings or typed) applied; unknown keys are ignored."""
        known = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for key, raw in values.items():
            if key in known and raw is not None:
                changes[key] = _coerce(known[key], raw)
        return dataclasses.replace(self, **changes)


def _coerce(f: dataclasses.Field, raw: Any) -> Any:
    target = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool,
                                                       "str": str}.get(str(f.type), str)
    if isinstance(raw, target) and not (target is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    try:
        if target is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        return target(text)
    except ValueError:
        raise BadRequest(f"invalid value for {f.name}: {raw!r}") from None


def env_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    out = {}
    for f in dataclasses.fields(ServerConfig):
        key = "TSF_" + f.name.upper()
        if key in environ:
            out[f.name] = environ[key]
    return out


def ts_env_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """TorchServe's ``TS_<KEY>`` variables as keys (``TS_JOB_QUEUE_SIZE`` -> ``job_queue_size``).

    TorchServe reads every ``TS_*`` variable this way; keys tsf does not know are ignored, as in
    the config file.
    """
    environ = os.environ if environ is None else environ
    return {name[3:].lower(): value for name, value in environ.items()
            if name.startswith("TS_") and len(name) > 3}


SERVICE_ENVELOPES = ("", "json", "body", "kserve", "kservev2", "kfserving", "kfservingv2")


def load_config(config_file: str | None = None, cli: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Build the effective configuration from every source, in precedence order."""
    config = ServerConfig()
    if config_file:
        values = read_properties(config_file)
        check_torchserve_keys(values, {f.name for f in dataclasses.fields(ServerConfig)})
        config = config.with_overrides(values)
    if config.enable_envvars_config:
        config = config.with_overrides(ts_env_values(environ))
    config = config.with_overrides(env_values(environ))
    if cli and cli.get("sagemaker"):
        config = config.with_overrides({"sagemaker": True})
    if config.sagemaker:
        from .sagemaker import sagemaker_values

        config = config.with_overrides(sagemaker_values(config, environ))
    if cli:
        config = config.with_overrides(cli)
    if config.service_envelope.lower() not in SERVICE_ENVELOPES:
        raise BadRequest(f"unsupported service_envelope {config.service_envelope!r}; use one of "
                         + ", ".join(e for e in SERVICE_ENVELOPES if e))
    return config


@dataclass(frozen=True)
class Address:
    """A parsed listen address such as ``http://127.0.0.1:8080``."""

    host: str
    port: int
    scheme: str = "http"

    @classmethod
    def parse(cls, text: str, default_port: int | Mapping[str, int] | None = None
              ) -> "Address":
        """``scheme://host:port`` (``http`` or ``https``), ``host:port`` or, with
        ``default_port`` (a port, or a port per scheme), a bare host."""
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https"):
            raise BadRequest(f"unsupported listen scheme {parts.scheme!r} in {text!r} (use http "
                             "or https)")
        try:
            port = parts.port
        except ValueError:
            raise BadRequest(f"listen address {text!r} has an invalid port") from None
        if port is None:
            if isinstance(default_port, Mapping):
                default_port = default_port.get(parts.scheme)
            if default_port is None:
                raise BadRequest(f"listen address {text!r} has no port")
            port = default_port
        return cls(host=parts.hostname or "127.0.0.1", port=port, scheme=parts.scheme)


# the port of an HTTP listener's address without one, by scheme (TorchServe's)
HTTP_DEFAULT_PORTS = {"inference": {"http": 80, "https": 443},
                      "management": {"http": 8081, "https": 8444},
                      "metrics": {"http": 8082, "https": 8445}}

# TorchServe's gRPC keys: the address is a host (``127.0.0.1``, TorchServe's form) or tsf's
# ``host:port``; the port key, when set, gives the port, else these defaults do
GRPC_DEFAULT_PORTS = {"grpc_inference_address": 7070, "grpc_management_address": 7071}


def grpc_listen_address(text: str, port_key: int, default_port: int) -> Address:
    """Where a gRPC API listens: ``text`` is a host or ``host:port``; ``port_key``
    (``grpc_*_port``, 0 when unset) replaces the port, ``default_port`` stands in for none."""
    address = Address.parse(text, default_port)
    return dataclasses.replace(address, port=port_key) if port_key > 0 else address


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) only accepts local connections."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface


def guard_management_address(config: ServerConfig, has_management_token: bool) -> ServerConfig:
    """The configuration with the management APIs (HTTP and gRPC) kept on loopback unless
    a management token is configured.

    Registering a model runs its code, so an open management port reachable from the network
    is remote code execution (ShellTorch).  A non-loopback management address without a
    management token is downgraded to ``127.0.0.1`` on the same port, with a warning.
    """
    if has_management_token:
        return config
    changes = {}
    for key in ("management_address", "grpc_management_address"):
        given = getattr(config, key)
        address = Address.parse(given, GRPC_DEFAULT_PORTS.get(key) or
                                HTTP_DEFAULT_PORTS["management"])
        if is_loopback(address.host):
            continue
        has_port = urlsplit(given if "://" in given else "http://" + given).port is not None
        changes[key] = (f"{address.scheme}://" if "://" in given else "") + "127.0.0.1" + \
            (f":{address.port}" if has_port else "")
        log.warning("%s %s is not loopback and no management token is configured: that API "
                    "listens on %s instead (set TSF_MANAGEMENT_TOKEN or auth_token_file to "
                    "expose it)", key, given, changes[key])
    return dataclasses.replace(config, **changes) if changes else config


@dataclass
class ModelSettings:
    """Per-model-version settings after REST parameters, model-config.yaml and defaults merge."""

    batch_size: int
    max_batch_delay: int
    response_timeout: int
    startup_timeout: int
    min_workers: int
    max_workers: int
    worker_memory_limit_mb: int = 0
    autoscale: AutoscaleSettings | None = None  # set by the manager from model-config
    options: ModelOptions = field(default_factory=ModelOptions)  # TorchServe's other keys
    capture: CaptureSettings | None = None  # data capture and monitoring (tsf.monitoring)


_YAML_KEYS = {
    "batchSize": "batch_size",
    "maxBatchDelay": "max_batch_delay",
    "responseTimeout": "response_timeout",
    "startupTimeout": "startup_timeout",
    "minWorkers": "min_workers",
    "maxWorkers": "max_workers",
    "workerMemoryLimitMb": "worker_memory_limit_mb",
}


def model_settings(config: ServerConfig, model_yaml: Mapping[str, Any],
                   rest: Mapping[str, Any], configured: Mapping[str, Any] | None = None
                   ) -> ModelSettings:
    """Merge per-model settings: REST parameters > model-config.yaml > ``configured`` (the
    ``models`` key's entry for this version) > server defaults."""
    values: dict[str, Any] = {
        "batch_size": config.batch_size,
        "max_batch_delay": config.max_batch_delay,
        "response_timeout": config.default_response_timeout,
        "startup_timeout": config.default_startup_timeout,
        "min_workers": config.default_workers_per_model,
        "max_workers": None,
        "worker_memory_limit_mb": config.worker_memory_limit_mb,
    }
    values.update(configured or {})
    for yaml_key, key in _YAML_KEYS.items():
        if model_yaml.get(yaml_key) is not None:
            values[key] = model_yaml[yaml_key]
    for key, value in rest.items():
        if value is not None:
            values[key] = value
    for key in list(values):
        if values[key] is not None:
            try:
                values[key] = int(values[key])
            except (TypeError, ValueError):
                raise BadRequest(f"{key} must be an integer, got {values[key]!r}") from None
    if values["max_workers"] is None or values["max_workers"] < values["min_workers"]:
        values["max_workers"] = values["min_workers"]
    if values["batch_size"] < 1:
        raise BadRequest("batch_size must be >= 1")
    if values["max_batch_delay"] < 0 or values["min_workers"] < 0:
        raise BadRequest("max_batch_delay and workers must be >= 0")
    if values["response_timeout"] <= 0 or values["startup_timeout"] <= 0:
        raise BadRequest("response_timeout and startup_timeout must be > 0")
    if values["worker_memory_limit_mb"] < 0:
        raise BadRequest("workerMemoryLimitMb must be >= 0")
    check_worker_cap(config, values["min_workers"])
    return ModelSettings(**values, options=model_options(model_yaml),
                         capture=capture_settings(model_yaml.get("capture"),
                                                  "model-config.yaml: capture"))


def check_worker_cap(config: ServerConfig, workers: int) -> None:
    """Refuse (400) more workers for one model than ``max_workers_per_model``."""
    cap = config.max_workers_per_model
    if cap > 0 and workers > cap:
        raise BadRequest(f"{workers} workers requested for one model; the server allows at "
                         f"most {cap} (max_workers_per_model)")

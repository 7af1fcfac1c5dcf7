"""TorchServe model-config.yaml keys beyond workers and batching, checked at register time.

Each key is honoured or refused with a 400 that names it; none is silently ignored:

* ``deviceType`` (``cpu`` or ``gpu``) and ``deviceIds`` (the GPU ids workers round-robin over;
  a worker refuses to load on an id it cannot see: :func:`tsf.context.pick_device`);
* ``clientTimeoutInMills``: a request queued longer is dropped with a 503;
* ``useJobTicket``: a request that no worker is free to take is refused at once with a 503;
* ``maxRetryTimeoutInSec``: how long a failing worker is restarted before the pool gives up;
* ``jobQueueSize``: this model's queue bound (instead of the server's ``job_queue_size``);
* ``sequenceBatching`` with ``maxNumSequence``, ``sequenceMaxIdleMSec``,
  ``sequenceTimeoutMSec`` and ``maxSequenceJobQueueSize``: stateful sequences
  (:mod:`tsf.batching.sequences`);
* ``continuousBatching`` and ``asyncCommunication``: accepted for models served by a generation
  engine (handler ``llm``), which always batch continuously and talk to their workers
  asynchronously; refused for any other handler (:mod:`tsf.serving.version_builder`);
* keys for features tsf does not have (tensor/pipeline parallelism, torchrun, DeepSpeed) are
  refused when set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import BadRequest

DEVICE_TYPES = ("cpu", "gpu")
# key -> the values that ask for nothing (anything else asks for a feature tsf lacks)
UNSUPPORTED = {
    "parallelType": (None, "", "none"),
    "parallelLevel": (None, 0, 1),
    "torchrun": (None, {}),
    "deepSpeed": (None, {}),
}


@dataclass
class ModelOptions:
    """The checked values of those keys (defaults: nothing asked for)."""

    device_type: str = ""              # "", "cpu" or "gpu"
    device_ids: list[int] = field(default_factory=list)
    client_timeout_ms: int = 0         # 0: a queued request waits up to response_timeout
    use_job_ticket: bool = False
    max_retry_timeout_s: int = 0       # 0: restart a failing worker for as long as it takes
    job_queue_size: int | None = None
    sequence_batching: bool = False
    max_num_sequence: int | None = None   # None: batch_size * max_workers (TorchServe's docs)
    sequence_max_idle_ms: int = 0
    sequence_timeout_ms: int = 0          # 0: no limit
    max_sequence_job_queue_size: int = 1
    continuous_batching: bool = False     # asked for: only engine handlers do it
    async_communication: bool = False


def _count(key: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"model-config.yaml: {key} must be an integer >= {minimum}, got "
                         f"{value!r:.60}")
    return value


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BadRequest(f"model-config.yaml: {key} must be true or false, got {value!r:.60}")


def model_options(model_yaml: Mapping[str, Any]) -> ModelOptions:
    """Check the keys above in a parsed model-config.yaml (BadRequest names a bad one)."""
    for key, harmless in UNSUPPORTED.items():
        if key in model_yaml and model_yaml[key] not in harmless:
            raise BadRequest(f"model-config.yaml: {key} is not supported by tsf (no tensor or "
                             "pipeline parallelism, torchrun or DeepSpeed); remove it to serve "
                             "this model")
    options = ModelOptions()
    device_type = model_yaml.get("deviceType")
    if device_type is not None:
        if not isinstance(device_type, str) or device_type.lower() not in DEVICE_TYPES:
            raise BadRequest(f"model-config.yaml: deviceType must be one of {DEVICE_TYPES}, "
                             f"got {device_type!r:.60}")
        options.device_type = device_type.lower()
    ids = model_yaml.get("deviceIds")
    if ids is not None:
        if not isinstance(ids, list) or not ids:
            raise BadRequest("model-config.yaml: deviceIds must be a non-empty list of GPU ids")
        options.device_ids = [_count("deviceIds", i) for i in ids]
        if options.device_type == "cpu":
            raise BadRequest("model-config.yaml: deviceIds lists GPUs but deviceType is cpu")
    if model_yaml.get("clientTimeoutInMills") is not None:
        options.client_timeout_ms = _count("clientTimeoutInMills",
                                           model_yaml["clientTimeoutInMills"])
    if model_yaml.get("useJobTicket") is not None:
        options.use_job_ticket = _flag("useJobTicket", model_yaml["useJobTicket"])
    if model_yaml.get("maxRetryTimeoutInSec") is not None:
        options.max_retry_timeout_s = _count("maxRetryTimeoutInSec",
                                             model_yaml["maxRetryTimeoutInSec"])
    if model_yaml.get("jobQueueSize") is not None:
        options.job_queue_size = _count("jobQueueSize", model_yaml["jobQueueSize"], 1)
    _sequence_options(model_yaml, options)
    for key, attribute in (("continuousBatching", "continuous_batching"),
                           ("asyncCommunication", "async_communication")):
        if model_yaml.get(key) is not None:
            setattr(options, attribute, _flag(key, model_yaml[key]))
    return options


def _sequence_options(model_yaml: Mapping[str, Any], options: ModelOptions) -> None:
    if model_yaml.get("sequenceBatching") is not None:
        options.sequence_batching = _flag("sequenceBatching", model_yaml["sequenceBatching"])
    if model_yaml.get("maxNumSequence") is not None:
        options.max_num_sequence = _count("maxNumSequence", model_yaml["maxNumSequence"], 1)
    if model_yaml.get("sequenceMaxIdleMSec") is not None:
        options.sequence_max_idle_ms = _count("sequenceMaxIdleMSec",
                                              model_yaml["sequenceMaxIdleMSec"])
    if model_yaml.get("sequenceTimeoutMSec") is not None:
        options.sequence_timeout_ms = _count("sequenceTimeoutMSec",
                                             model_yaml["sequenceTimeoutMSec"])
    if model_yaml.get("maxSequenceJobQueueSize") is not None:
        options.max_sequence_job_queue_size = max(1, _count(
            "maxSequenceJobQueueSize", model_yaml["maxSequenceJobQueueSize"]))
    if options.sequence_batching and options.sequence_max_idle_ms <= 0:
        raise BadRequest("model-config.yaml: sequenceBatching needs sequenceMaxIdleMSec > 0 "
                         "(how long an idle sequence stays open)")

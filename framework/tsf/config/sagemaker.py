"""The ``SAGEMAKER_*`` variables SageMaker and its inference toolkits read, as tsf settings.

SageMaker starts a container with ``SAGEMAKER_BIND_TO_PORT`` (default 8080) and the model under
``/opt/ml/model`` (``/opt/ml/models/<name>/model`` for multi-model endpoints).  TorchServe's
SageMaker toolkit adds ``SAGEMAKER_TS_*`` batch and worker settings; its inference toolkit reads
the model server's timeout, workers and request size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import BadRequest

MB = 1024 * 1024

# variable -> ServerConfig key; later entries win where two name the same key, as the toolkit's
# SAGEMAKER_TS_* settings override the generic model-server ones
_DIRECT = (
    ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "default_response_timeout"),
    ("SAGEMAKER_MODEL_SERVER_WORKERS", "default_workers_per_model"),
    ("SAGEMAKER_TS_RESPONSE_TIMEOUT", "default_response_timeout"),
    ("SAGEMAKER_TS_MIN_WORKERS", "default_workers_per_model"),
    ("SAGEMAKER_TS_BATCH_SIZE", "batch_size"),
    ("SAGEMAKER_TS_MAX_BATCH_DELAY", "max_batch_delay"),
    ("SAGEMAKER_MAX_RESPONSE_SIZE", "max_response_size"),
)


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def sagemaker_values(config: Any, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings for SageMaker mode from the container's variables (applied below the CLI).

    The inference API listens on every interface at ``SAGEMAKER_BIND_TO_PORT``: SageMaker mode
    is asked for explicitly, and SageMaker reaches the container from outside.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {
        "inference_address": f"http://0.0.0.0:{env.get('SAGEMAKER_BIND_TO_PORT') or 8080}"}
    if env.get("SAGEMAKER_BASE_DIR"):
        base = Path(env["SAGEMAKER_BASE_DIR"])
        values["sagemaker_model_dir"] = str(base / "model")
        values["sagemaker_multi_model_dir"] = str(base / "models")
    if env.get("SAGEMAKER_MODEL_DIR"):
        values["sagemaker_model_dir"] = env["SAGEMAKER_MODEL_DIR"]
    for variable, key in _DIRECT:
        if env.get(variable):
            values[key] = env[variable]
    if env.get("SAGEMAKER_MAX_REQUEST_SIZE"):  # takes precedence, as in TorchServe
        values["max_request_size"] = env["SAGEMAKER_MAX_REQUEST_SIZE"]
    elif env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB"):
        try:
            values["max_request_size"] = int(float(env["SAGEMAKER_MAX_PAYLOAD_IN_MB"]) * MB)
        except ValueError:
            raise BadRequest("invalid value for SAGEMAKER_MAX_PAYLOAD_IN_MB: "
                             f"{env['SAGEMAKER_MAX_PAYLOAD_IN_MB']!r}") from None
    multi = _true(env.get("SAGEMAKER_MULTI_MODEL")) or config.sagemaker_multi_model
    values["sagemaker_multi_model"] = multi
    # SageMaker's folders are the model store, and SageMaker's model is the one served: a config
    # file's model_store and load_models (an image's defaults) give way; the command line wins
    values["model_store"] = values.get("sagemaker_multi_model_dir",
                                       config.sagemaker_multi_model_dir) if multi else \
        values.get("sagemaker_model_dir", config.sagemaker_model_dir)
    values["load_models"] = ""
    return values

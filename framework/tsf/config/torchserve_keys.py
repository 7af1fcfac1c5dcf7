"""TorchServe's ``config.properties`` keys that tsf does not take as they are: refused, or not
applicable (read, logged as ignored, and why).

Keys tsf supports are the fields of :class:`tsf.config.settings.ServerConfig`.  A refused key asks
for something tsf does not do, where ignoring it would leave the server less safe or different from
what its operator asked for (hidden environment variables, a CPU launcher): tsf refuses to start
instead.  ``docs/configuration.md`` lists every key of these tables; a unit test keeps it so.
"""

from __future__ import annotations

import logging
from typing import Mapping

from ..errors import BadRequest

log = logging.getLogger("tsf.config")

# key -> (values that ask for nothing tsf lacks, what to do instead)
REFUSED: dict[str, tuple[tuple[str, ...], str]] = {
    "blacklist_env_vars": ((), "workers see the server's environment: start tsf with only the "
                               "variables workers may see"),
    "metrics_mode": (("prometheus",), "metrics are served in Prometheus format only"),
    "metrics_format": (("prometheus",), "metrics are served in Prometheus format only"),
    "enable_metrics_api": (("true",), "the metrics API is always served (bind "
                                      "metrics_address to loopback to hide it)"),
    "decode_input_request": (("true",), "workers always decode JSON and text parts"),
    "number_of_gpu": ((), "use each model's deviceIds (model-config.yaml) to place workers"),
    "cpu_launcher_enable": (("false",), "there is no CPU launcher: set "
                                        "number_of_threads_per_worker"),
    "cpu_launcher_args": ((), "there is no CPU launcher: set number_of_threads_per_worker"),
}

# key -> why it does not apply to tsf
NOT_APPLICABLE: dict[str, str] = {
    "vmargs": "there is no JVM",
    "prefer_direct_buffer": "there is no JVM",
    "number_of_netty_threads": "the front end is one asyncio event loop",
    "netty_client_threads": "the front end is one asyncio event loop",
    "async_logging": "logging never blocks a request",
    "initial_worker_port": "workers talk over Unix socket pairs, not ports",
    "initial_distribution_port": "there is no torchrun",
    "model_server_home": "not needed",
    "tsConfigFile": "written into config snapshots: the config file their server started with",
    "unregister_model_timeout": "unregister waits for running batches up to the model's "
                                "response timeout",
    "disable_token_authorization": "tokens are off unless auth_token_file is set",
    "use_native_io": "no native I/O layer",
    "io_ratio": "no native I/O layer",
    "system_metrics_cmd": "worker CPU and memory are read at scrape time",
    "disable_system_metrics": "worker CPU and memory are read at scrape time",
    "limit_max_image_pixels": "image handlers bound decoded images themselves",
    "grpc_inference_max_connection_age_ms": "gRPC connections live until the client closes "
                                            "them",
    "grpc_management_max_connection_age_ms": "gRPC connections live until the client closes "
                                             "them",
    "grpc_inference_max_connection_age_grace_ms": "gRPC connections live until the client "
                                                  "closes them",
    "grpc_management_max_connection_age_grace_ms": "gRPC connections live until the client "
                                                   "closes them",
}


def check_torchserve_keys(values: Mapping[str, str], known: set[str]) -> None:
    """Refuse (BadRequest) a refused key asking for something; log the keys that are ignored.

    ``known`` holds the keys tsf reads (they are not checked here).
    """
    for key, value in values.items():
        if key in known:
            continue
        if key in REFUSED:
            harmless, instead = REFUSED[key]
            if str(value).strip().lower() not in harmless:
                raise BadRequest(f"config key {key} is not supported by tsf: {instead}")
        elif key in NOT_APPLICABLE:
            log.warning("config key %s is ignored: %s", key, NOT_APPLICABLE[key])
        else:
            log.warning("config key %s is unknown to tsf and ignored", key)

"""The Context a handler sees in its worker, compatible with TorchServe's ``Context``.

It carries the model's identity and files, the current batch's request ids and headers, the
per-request response status, content type and headers a handler may set, and ``metrics``: the
API through which handlers record custom metrics that reach ``/metrics`` on the front end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable


def _labels(dimensions: Any) -> dict[str, str]:
    if not dimensions:
        return {}
    if isinstance(dimensions, dict):
        return {str(k): str(v) for k, v in dimensions.items()}
    out = {}
    for dim in dimensions:  # TorchServe Dimension objects or (name, value) pairs
        name, value = (dim.name, dim.value) if hasattr(dim, "name") else dim
        out[str(name)] = str(value)
    return out


def pick_device(model_config: dict, worker_index: int) -> str:
    """Spread workers round-robin over model-config's ``deviceIds``, else over the visible
    GPUs; CPU without one or with ``deviceType: cpu``.

    ``deviceType: gpu`` without a visible GPU, or a listed id the worker cannot see, is a
    ModelLoadError (the model does not load rather than run somewhere it was not meant to).
    """
    device_type = str(model_config.get("deviceType", "")).lower()
    if device_type == "cpu":
        return "cpu"
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ids = model_config.get("deviceIds") or []
    if ids or device_type == "gpu":
        from .errors import ModelLoadError

        unseen = [i for i in ids if not 0 <= i < visible]
        if not visible or unseen:
            raise ModelLoadError(
                f"model-config.yaml asks for GPU(s) {unseen or ids or 'any'} (deviceType "
                f"{device_type or 'unset'}, deviceIds {ids}) but this worker sees {visible} "
                f"GPU(s) (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    if visible:
        gpu = ids[worker_index % len(ids)] if ids else worker_index % visible
        torch.cuda.set_device(gpu)
        return f"cuda:{gpu}"
    return "cpu"


def placement_requested(model_config: dict) -> bool:
    """Whether model-config.yaml places the model (``deviceType: gpu`` or ``deviceIds``)."""
    return str(model_config.get("deviceType", "")).lower() == "gpu" or \
        bool(model_config.get("deviceIds"))


class HandlerMetrics:
    """Custom metrics recorded by a handler; sent to the front end with each batch's results.

    Names must be valid Prometheus names; dimensions become labels (``model_name`` and
    ``model_version`` are added by the front end).
    """

    def __init__(self) -> None:
        self._records: list[dict] = []

    def _add(self, kind: str, name: str, value: float, dimensions: Any) -> None:
        self._records.append({"name": name, "kind": kind, "value": float(value),
                              "labels": _labels(dimensions)})

    def add_counter(self, name: str, value: float = 1, idx: Any = None, unit: str = "count",
                    dimensions: Any = None) -> None:
        self._add("counter", name, value, dimensions)

    def add_gauge(self, name: str, value: float, dimensions: Any = None) -> None:
        self._add("gauge", name, value, dimensions)

    def add_histogram(self, name: str, value: float, dimensions: Any = None) -> None:
        self._add("histogram", name, value, dimensions)

    # TorchServe's names for gauge-like values
    def add_time(self, name: str, value: float, idx: Any = None, unit: str = "ms",
                 dimensions: Any = None) -> None:
        self._add("gauge", name, value, dimensions)

    add_size = add_time
    add_percent = add_time

    def drain(self) -> list[dict]:
        records, self._records = self._records, []
        return records


class Context:
    """What a handler knows about its model and the batch it is processing."""

    def __init__(self, *, model_name: str, model_version: str, model_dir: str | Path,
                 manifest: dict, model_config: dict | None = None, batch_size: int = 1,
                 worker_id: str = "", worker_index: int = 0, device: str | None = None) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.model_dir = str(model_dir)
        self.manifest = manifest
        self.model_config = model_config or {}
        self.batch_size = batch_size
        self.worker_id = worker_id
        self.worker_index = worker_index
        self._device = device
        self.model: Any = None
        self.handler: Any = None  # the handler instance serving this model (set by the worker)
        self.metrics = HandlerMetrics()
        self.request_ids: dict[int, str] = {}
        self._request_headers: list[dict[str, str]] = []
        self._request_params: list[dict[str, str]] = []
        self._request_protocols: list[str] = []
        self._response: list[dict] = []

    @property
    def device(self) -> str:
        """``cuda:N`` when a GPU is visible (and deviceType is not cpu), else ``cpu``.

        Decided on first use, so handlers that never touch torch never import it.
        """
        if self._device is None:
            self._device = pick_device(self.model_config, self.worker_index)
        return self._device

    @property
    def device_if_chosen(self) -> str:
        return self._device or "cpu"

    @property
    def gpu_id(self) -> int | None:
        return int(self.device.split(":")[1]) if self.device.startswith("cuda") else None

    @property
    def system_properties(self) -> dict:
        """TorchServe's system properties (``model_dir``, ``gpu_id``, ``batch_size``, ...)."""
        return {"model_dir": self.model_dir, "gpu_id": self.gpu_id,
                "batch_size": self.batch_size, "server_name": "tsf",
                "limit_max_image_pixels": True}

    @property
    def model_yaml_config(self) -> dict:
        """TorchServe's name for the parsed model-config.yaml."""
        return self.model_config

    @property
    def handler_config(self) -> dict:
        """The ``handler:`` section of model-config.yaml (handler options)."""
        section = self.model_config.get("handler") or {}
        return section if isinstance(section, dict) else {}

    # --- batch state, set by the worker -----------------------------------------------------
    def begin_batch(self, request_ids: Iterable[str], headers: Iterable[dict[str, str]],
                    params: Iterable[dict[str, str]] | None = None,
                    protocols: Iterable[str] | None = None) -> None:
        self.request_ids = dict(enumerate(request_ids))
        self._request_headers = [{k.lower(): v for k, v in h.items()} for h in headers]
        self._request_params = list(params) if params is not None else \
            [{} for _ in self._request_headers]
        self._request_protocols = list(protocols) if protocols is not None else \
            ["torchserve" for _ in self._request_headers]
        self._response = [{"status": 200, "phrase": "", "content_type": None, "headers": {}}
                          for _ in self._request_headers]

    def response_settings(self, idx: int) -> dict:
        return self._response[idx]

    # --- TorchServe-compatible request/response API ------------------------------------------
    def get_request_id(self, idx: int = 0) -> str:
        return self.request_ids.get(idx, "")

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self._request_headers[idx].get(key.lower())

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self._request_headers[idx])

    def get_request_params(self, idx: int) -> dict[str, str]:
        """The request's URL query parameters (``?target=3&format=png``), last value wins."""
        return dict(self._request_params[idx]) if idx < len(self._request_params) else {}

    def get_request_protocol(self, idx: int) -> str:
        """``"oip"`` for KServe v2 / OIP requests (HTTP or gRPC), whose inputs are tensors that
        carry their own batch dimension; ``"torchserve"`` otherwise."""
        protocols = self._request_protocols
        return protocols[idx] if idx < len(protocols) else "torchserve"

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self._response[idx].update(status=int(code), phrase=phrase)

    def get_response_status(self, idx: int = 0) -> int:
        return self._response[idx]["status"]

    def set_response_content_type(self, idx: int, value: str) -> None:
        self._response[idx]["content_type"] = value

    def get_response_content_type(self, idx: int) -> str | None:
        return self._response[idx]["content_type"]

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self._response[idx]["headers"][key] = value

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self._response[idx]["headers"]

"""The Context a handler sees in its worker, compatible with TorchServe's ``Context``.

It carries the model's identity and files, the current batch's request ids and headers, the
per-request response status, content type and headers a handler may set, ``batch_state`` (what
a handler remembers about the current batch between its stages, emptied when the next batch
begins), and ``metrics``: the API through which handlers record custom metrics that reach
``/metrics`` on the front end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

# (batch index, request id, value, status code) -> None; sends one intermediate answer
PartialSink = Callable[[int, str, Any, int], None]

from .runtime.handler_metrics import HandlerMetrics

__all__ = ["Context", "HandlerMetrics", "RequestProcessor", "pick_device"]


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


class RequestProcessor:
    """One request of the batch: its headers in, its status and headers out (TorchServe's)."""

    def __init__(self, request_header: dict[str, str]) -> None:
        self._request_header = {k.lower(): v for k, v in request_header.items()}
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}
        self.content_type: str | None = None

    def get_request_property(self, key: str) -> str | None:
        return self._request_header.get(key.lower())

    def get_request_properties(self) -> dict[str, str]:
        return dict(self._request_header)

    def set_request_property(self, key: str, value: str) -> None:
        self._request_header[key.lower()] = value

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self._status_code = int(code)
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key)


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
        self.request_processor: list[RequestProcessor] = []
        self._request_params: list[dict[str, str]] = []
        self._request_protocols: list[str] = []
        self.partial_sink: PartialSink | None = None  # set by the worker while a batch runs
        self.batch_state: dict[str, Any] = {}  # a handler's notes on the current batch
        # stateful sequences: the request headers naming them (TorchServe's attributes; the
        # worker sets the server's names, see tsf.batching.sequences)
        self.header_key_sequence_id = os.getenv("TS_REQUEST_SEQUENCE_ID",
                                                "ts_request_sequence_id")
        self.header_key_sequence_start = os.getenv("TS_REQUEST_SEQUENCE_START",
                                                   "ts_request_sequence_start")
        self.header_key_sequence_end = os.getenv("TS_REQUEST_SEQUENCE_END",
                                                 "ts_request_sequence_end")

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
        from . import __version__

        return {"model_dir": self.model_dir, "gpu_id": self.gpu_id,
                "batch_size": self.batch_size, "server_name": "tsf",
                "server_version": __version__, "limit_max_image_pixels": True}

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
        """Start a batch (or the retry of one request alone): its requests replace the last
        batch's, and ``batch_state`` starts empty."""
        self.request_ids = dict(enumerate(request_ids))
        self.batch_state = {}
        self.request_processor = [RequestProcessor(h) for h in headers]
        self._request_params = list(params) if params is not None else \
            [{} for _ in self.request_processor]
        self._request_protocols = list(protocols) if protocols is not None else \
            ["torchserve" for _ in self.request_processor]

    def response_settings(self, idx: int) -> dict:
        """Status, reason phrase, content type and headers the handler set for request ``idx``."""
        processor = self.request_processor[idx]
        return {"status": processor.get_response_status_code(),
                "phrase": processor.get_response_status_phrase() or "",
                "content_type": processor.content_type,
                "headers": processor.get_response_headers()}

    # --- TorchServe-compatible request/response API ------------------------------------------
    def get_request_id(self, idx: int = 0) -> str:
        return self.request_ids.get(idx, "")

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_request_properties()

    def get_sequence_id(self, idx: int) -> str | None:
        """The id of the stateful sequence request ``idx`` belongs to (``sequenceBatching``)."""
        return self.request_processor[idx].get_request_property(self.header_key_sequence_id)

    def get_request_params(self, idx: int) -> dict[str, str]:
        """The request's URL query parameters (``?target=3&format=png``), last value wins."""
        return dict(self._request_params[idx]) if idx < len(self._request_params) else {}

    def get_request_protocol(self, idx: int) -> str:
        """``"oip"`` for KServe v2 / OIP requests (HTTP or gRPC), whose inputs are tensors that
        carry their own batch dimension; ``"torchserve"`` otherwise."""
        protocols = self._request_protocols
        return protocols[idx] if idx < len(protocols) else "torchserve"

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.request_processor[idx].report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self.request_processor:
            processor.report_status(code, phrase)

    def get_response_status(self, idx: int = 0) -> tuple[int, str | None]:
        """``(code, reason phrase)``, as TorchServe returns it."""
        processor = self.request_processor[idx]
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.request_processor[idx].content_type = value

    def get_response_content_type(self, idx: int) -> str | None:
        return self.request_processor[idx].content_type

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.request_processor[idx].add_response_property(key, value)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_response_headers()

    # --- streaming ----------------------------------------------------------------------------
    def send_intermediate_predict_response(self, ret: list, req_id_map: dict[int, str],
                                           message: str = "", code: int = 200) -> None:
        """Send ``ret[idx]`` to the client of each request ``idx`` in ``req_id_map`` now, before
        the batch's final answers (TorchServe's streaming).  Values are encoded as final results
        are; ``message`` is accepted for TorchServe's signature and not sent."""
        if self.partial_sink is None:
            raise RuntimeError("send_intermediate_predict_response works only inside a worker "
                               "while a batch runs")
        for idx, request_id in req_id_map.items():
            self.partial_sink(int(idx), str(request_id), ret[idx], int(code))

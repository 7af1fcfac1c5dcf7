"""The in-process ceiling: the same model and input, called directly with plain torch.

For tensor workloads, the model on a ready batch.  For JPEG workloads the ceiling is a tuned
loop: each batch's pictures are decoded (libjpeg-turbo through torchvision) and transformed
(resize 256, crop 224, normalise: the handler's tensor path) in a pool of threads, the next
batch's while the model runs the current one; so the ratio measures only what serving adds.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from workloads import RESNET, Workload

MIN_CALLS = 5  # a median of at least this many calls, however slow the model


def load_model(store: Path, workload: Workload):
    return load_model_file(store / "src" / workload.model)


def load_model_file(path: Path):
    """A workload's model from its file: a ``.pt2`` package or ResNet-18's state_dict."""
    if path.suffix == ".pt2":
        from tsf.runtime.pt2 import load_pt2

        return load_pt2(path, "cpu")
    namespace: dict = {}
    exec(RESNET, namespace)
    model = namespace["ResNet18"]()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _image_batches(workload: Workload, batch_size: int, threads: int):
    """A callable giving the next batch: decoded and transformed in ``threads`` threads, one
    batch ahead of the caller."""
    from tsf_handler_image.decoding import decode_image
    from tsf_handler_image.vision import VisionHandler

    transform = VisionHandler().build_transform(dict(VisionHandler.defaults))
    pool = ThreadPoolExecutor(threads)

    def prepare(data: bytes):
        return transform(decode_image(data, "tensor"))

    def submit():
        return [pool.submit(prepare, workload.body) for _ in range(batch_size)]

    pending = [submit()]

    def next_batch():
        futures = pending.pop()
        pending.append(submit())  # the next batch decodes while the model runs this one
        return torch.stack([f.result() for f in futures])

    return next_batch, pool


def measure(workload: Workload, store: Path, batch_size: int, duration: float,
            threads: int | None = None) -> dict:
    """Samples per second and median seconds per call, after a short warm-up."""
    model = load_model(store, workload)
    pool = None
    if workload.kind == "image":
        make, pool = _image_batches(workload, batch_size, threads or torch.get_num_threads())
    elif workload.name == "mlp":
        x = torch.full((batch_size, 64), 0.5)
        make = lambda: x  # noqa: E731
    else:
        x = torch.frombuffer(bytearray(workload.body), dtype=torch.float32).view(1, 3, 224, 224)
        x = x.repeat(batch_size, 1, 1, 1)
        make = lambda: x  # noqa: E731
    try:
        with torch.inference_mode():
            for _ in range(3):
                model(make())
            times: list[float] = []
            started = time.perf_counter()
            stop = started + duration
            while time.perf_counter() < stop or len(times) < MIN_CALLS:
                start = time.perf_counter()
                model(make()).argmax(dim=1).tolist()
                times.append(time.perf_counter() - start)
            wall = time.perf_counter() - started
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return {"throughput": batch_size * len(times) / wall, "p50": statistics.median(times)}

"""The in-process ceiling: the same model and input, called directly with plain torch.

For ``jpeg`` the ceiling includes what the handler does per image (decode, resize, crop,
normalise), so the ratio measures only what serving adds.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import torch

from workloads import Workload

MIN_CALLS = 5  # a median of at least this many calls, however slow the model


def _batch_maker(workload: Workload, batch_size: int):
    if workload.name == "mlp":
        x = torch.full((batch_size, 64), 0.5)
        return lambda: x
    if workload.name == "conv":
        x = torch.frombuffer(bytearray(workload.body), dtype=torch.float32).view(1, 3, 224, 224)
        x = x.repeat(batch_size, 1, 1, 1)
        return lambda: x
    from PIL import Image
    from torchvision.transforms import v2

    transform = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224),
                            v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def decode_and_stack():
        images = [transform(v2.functional.pil_to_tensor(
            Image.open(io.BytesIO(workload.body)).convert("RGB"))) for _ in range(batch_size)]
        return torch.stack(images)
    return decode_and_stack


def measure(workload: Workload, store: Path, batch_size: int, duration: float) -> dict:
    """Samples per second and median seconds per call, after a short warm-up."""
    model = torch.jit.load(str(store / "src" / workload.serialized)).eval()
    make = _batch_maker(workload, batch_size)
    with torch.inference_mode():
        for _ in range(3):
            model(make())
        times: list[float] = []
        stop = time.perf_counter() + duration
        while time.perf_counter() < stop or len(times) < MIN_CALLS:
            start = time.perf_counter()
            model(make()).argmax(dim=1).tolist()
            times.append(time.perf_counter() - start)
    return {"throughput": batch_size * len(times) / sum(times),
            "p50": statistics.median(times)}

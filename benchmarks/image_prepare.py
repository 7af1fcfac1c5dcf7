"""Per-picture cost of the image handlers' preparation: the ``tensor`` backend, the ``pil``
backend, and the ``pil`` backend's previous round trip through a tensor (one torch thread,
6 photos of 500x375 and 6 of 1024x768, 7 alternating rounds; min and median ms per picture).

    .venv/bin/python benchmarks/image_prepare.py
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import workloads  # noqa: E402
from tsf_handler_image.decoding import decode_image  # noqa: E402
from tsf_handler_image.vision import VisionHandler  # noqa: E402

torch.set_num_threads(1)
data = [workloads.photo(i) for i in range(6)] + [workloads.photo(i, (1024, 768)) for i in range(6)]


def handler(backend: str) -> VisionHandler:
    made = VisionHandler()
    made.configure({"image_backend": backend})
    return made


h, t = handler("pil"), handler("tensor")


WAYS = {
    "pil, round trip through a tensor (before)": lambda d: h.transform(decode_image(d, "pil")),
    "pil": lambda d: h.prepare_request({"body": d}, "x"),
    "tensor (default)": lambda d: t.prepare_request({"body": d}, "x"),
}
times: dict[str, list[float]] = {name: [] for name in WAYS}
for _ in range(7):
    for name, way in WAYS.items():
        start = time.perf_counter()
        for picture in data:
            way(picture)
        times[name].append((time.perf_counter() - start) / len(data) * 1e3)
for name, values in times.items():
    print(f"{name}: min {min(values):.2f} ms/picture, median {sorted(values)[3]:.2f}")

"""Before and after: the speed of two forms of a model and how far their outputs differ.

Speed is the model call alone on the preprocessed sample inputs: the latency of a batch of 1,
and samples per second at the largest batch, measured in alternating rounds (the original,
then the new form, then the other way round) so that a machine whose speed drifts affects both
alike.  Each is given as the median and the best call: on a machine other work shares, torch's
threads wait for each other at every parallel region whenever one of them is descheduled, and
medians swing by factors while the best calls stay put; the ratios use the best calls.
Accuracy: over every sample, the share whose top-1 class (argmax of a ``N x classes`` output)
is the same, and the largest absolute difference of any output value.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Speed:
    """One form's figures: batch-1 latencies (seconds) and large-batch samples per second."""

    latencies: list[float] = field(default_factory=list)
    batch_times: list[float] = field(default_factory=list)
    batch: int = 1

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1e3

    @property
    def best_ms(self) -> float:
        return min(self.latencies) * 1e3

    @property
    def throughput(self) -> float:
        """Samples per second of the median large-batch call."""
        return self.batch / statistics.median(self.batch_times)

    @property
    def best_throughput(self) -> float:
        return self.batch / min(self.batch_times)


def _flat(output: Any) -> list:
    if hasattr(output, "detach"):
        return [output.detach().float().cpu()]
    if isinstance(output, dict):
        return [t for k in sorted(output) for t in _flat(output[k])]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _flat(item)]
    return []


def outputs(model: Callable, inputs: Any, max_batch: int) -> list:
    """The model's flattened outputs over ``inputs``, run in batches of ``max_batch``."""
    import torch

    with torch.inference_mode():
        parts = [_flat(model(rows)) for rows in inputs.split(max_batch)]
    return [torch.cat(column) for column in zip(*parts)]


def agreement(before: list, after: list) -> dict:
    """Top-1 agreement (for a 2-D first output) and the largest absolute difference."""
    result: dict[str, Any] = {"max_abs_diff": max(
        (float((a - b).abs().max()) for a, b in zip(before, after) if a.numel()), default=0.0)}
    if before and before[0].dim() == 2 and before[0].shape[1] > 1:
        same = (before[0].argmax(1) == after[0].argmax(1))
        result.update(top1_agree=int(same.sum()), samples=int(same.numel()))
    return result


def _time_calls(model: Callable, x: Any, seconds: float, minimum: int = 3) -> list[float]:
    import torch

    times: list[float] = []
    with torch.inference_mode():
        for _ in range(3):  # warm: first calls build kernels and caches
            model(x)
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop or len(times) < minimum:
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return times


def compare_speed(models: dict[str, Callable], inputs: Any, max_batch: int, rounds: int,
                  seconds: float) -> dict[str, Speed]:
    """Batch-1 latency and batch-``max_batch`` throughput of each model, in alternating
    rounds of ``seconds`` per measurement."""
    import torch

    one = inputs[:1]
    reps = -(-max_batch // inputs.shape[0])
    big = torch.cat([inputs] * reps)[:max_batch] if reps > 1 else inputs[:max_batch]
    speeds = {name: Speed(batch=big.shape[0]) for name in models}
    names = list(models)
    for index in range(rounds):
        for name in (names if index % 2 == 0 else names[::-1]):
            speeds[name].latencies.extend(_time_calls(models[name], one, seconds / 2))
            speeds[name].batch_times.extend(_time_calls(models[name], big, seconds / 2))
    return speeds


def table(rows: list[tuple[str, Speed, dict | None]], max_batch: int) -> str:
    """The before/after table in Markdown."""
    base = rows[0][1]
    lines = [f"| form | batch 1 ms (best / p50) | batch {max_batch} samples/s (best / p50) | "
             "throughput × | latency × | top-1 agreement | max abs output diff |",
             "|---|---|---|---|---|---|---|"]
    for name, speed, accuracy in rows:
        agree, diff = "", ""
        if accuracy is not None:
            diff = f"{accuracy['max_abs_diff']:.3g}"
            if "samples" in accuracy:
                agree = (f"{100 * accuracy['top1_agree'] / accuracy['samples']:.1f}% "
                         f"({accuracy['top1_agree']}/{accuracy['samples']})")
        lines.append(f"| {name} | {speed.best_ms:.2f} / {speed.p50_ms:.2f} | "
                     f"{speed.best_throughput:.1f} / {speed.throughput:.1f} | "
                     f"{speed.best_throughput / base.best_throughput:.2f} | "
                     f"{base.best_ms / speed.best_ms:.2f} | {agree} | {diff} |")
    return "\n".join(lines)

"""tsf against the in-process ceiling and TorchServe 0.12, on the same archives and load.

    python benchmarks/compare.py [--duration 4] [--concurrency 1 8 32]
                                 [--torchserve-venv .venv-ts] [--systems tsf torchserve]

Builds the workloads (tiny MLP, ResNet-18 on raw tensors, image_classifier on JPEG), then starts
each system on 127.0.0.1 in turn and, for each point, measures the in-process ceiling and drives
the system with the shared load generator (``loadgen.py``: closed loop, keep-alive connections,
fixed duration).  Prints one table with throughput, latency percentiles, errors, memory, time to ready and the
ratios tsf/ceiling and tsf/TorchServe.  ``make bench-torchserve`` creates ``.venv-ts``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import ceiling  # noqa: E402
import workloads  # noqa: E402
from loadgen import run_load  # noqa: E402
from servers import TorchServe, Tsf  # noqa: E402


def drive(system, workload, batch_size: int, store: Path, args) -> list[dict]:
    name = f"{workload.name}_b{batch_size}"
    system.register(f"{workload.name}.mar", name, batch_size, args.max_batch_delay)
    url = f"{system.inference}/predictions/{name}"
    rows = []
    try:
        for conc in args.concurrency:
            # The ceiling is measured next to each point (the server idle meanwhile): on a
            # shared machine the speed of the cores drifts by tens of percent within minutes.
            ceil = ceiling.measure(workload, store, batch_size, args.duration / 2)
            asyncio.run(run_load(url, workload.body, conc, args.warmup, workload.content_type))
            result = asyncio.run(run_load(url, workload.body, conc, args.duration,
                                          workload.content_type))
            front, workers = system.rss()
            rows.append({"system": system.name, "model": workload.name, "batch": batch_size,
                         "conc": conc, "rps": result.throughput,
                         "p50": result.median * 1e3, "p90": result.percentile(90) * 1e3,
                         "p99": result.percentile(99) * 1e3, "errors": result.errors,
                         "front_mb": front, "workers_mb": workers,
                         "ceiling": ceil["throughput"], "ceiling_p50": ceil["p50"] * 1e3})
    finally:
        system.unregister(name)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-delay", type=int, default=5, help="ms")
    parser.add_argument("--systems", nargs="+", default=["tsf", "torchserve"])
    parser.add_argument("--workloads", nargs="+", default=["mlp", "conv", "jpeg"])
    parser.add_argument("--torchserve-venv", type=Path, default=Path(".venv-ts"))
    args = parser.parse_args()
    args.torchserve_venv = args.torchserve_venv.absolute()

    store = Path(tempfile.mkdtemp(prefix="tsf-bench-store-"))
    chosen = workloads.build(store, tuple(args.workloads))
    rows, ready = [], {}
    for system_name in args.systems:
        if system_name == "torchserve" and not (args.torchserve_venv / "bin" / "torchserve").exists():
            print(f"TorchServe skipped: no {args.torchserve_venv}/bin/torchserve "
                  "(make bench-torchserve)")
            continue
        system = Tsf(store) if system_name == "tsf" else TorchServe(store, args.torchserve_venv)
        ready[system_name] = system.ready
        try:
            for workload in chosen:
                for batch in workload.batch_sizes:
                    rows.append(drive(system, workload, batch, store, args))
        finally:
            system.stop()
    report([r for group in rows for r in group], ready)
    return 0


def report(rows: list[dict], ready: dict) -> None:
    print("time to ready: " + ", ".join(f"{k} {v:.2f} s" for k, v in ready.items()))
    ts = {(r["model"], r["batch"], r["conc"]): r for r in rows if r["system"] == "torchserve"}
    print("| system | model | batch | conc | req/s | p50 ms | p90 ms | p99 ms | errors | "
          "front MB | workers MB | ceiling/s | ceiling p50 ms | x ceiling | x TorchServe |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ceil = r["ceiling"]
        other = ts.get((r["model"], r["batch"], r["conc"]))
        versus = f"{r['rps'] / other['rps']:.2f}" if other and r["system"] == "tsf" \
            and other["rps"] else ""
        print(f"| {r['system']} | {r['model']} | {r['batch']} | {r['conc']} | {r['rps']:.0f} | "
              f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['errors']} | "
              f"{r['front_mb']:.0f} | {r['workers_mb']:.0f} | {ceil:.0f} | "
              f"{r['ceiling_p50']:.2f} | {r['rps'] / ceil:.2f} | "
              f"{versus} |")


if __name__ == "__main__":
    sys.exit(main())

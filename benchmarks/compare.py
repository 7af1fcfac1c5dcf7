"""tsf against the in-process ceiling and TorchServe 0.12, on the same archives and load.

    python benchmarks/compare.py [--duration 4] [--concurrency 1 8 32]
                                 [--rounds 2] [--torchserve-venv .venv-ts]
                                 [--systems tsf torchserve]

Builds the workloads (tiny MLP, ResNet-18 on raw tensors, image_classifier on JPEG) and starts
every system on 127.0.0.1 side by side.  Each point runs in rounds: the in-process ceiling,
then each system (in alternating order) driven by the shared load generator (``loadgen.py``:
closed loop, keep-alive connections, fixed duration).  Prints one table with throughput,
latency percentiles, errors, memory, time to ready and the ratios tsf/ceiling and
tsf/TorchServe.  ``make bench-torchserve`` creates ``.venv-ts``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import ceiling  # noqa: E402
import workloads  # noqa: E402
from loadgen import run_load  # noqa: E402
from servers import TorchServe, Tsf  # noqa: E402


def measure_point(systems: list, workload, batch_size: int, conc: int, store: Path,
                  args) -> list[dict]:
    """One (workload, batch, concurrency) point: ``--rounds`` rounds, each measuring the
    ceiling and then every system back to back (in alternating order).

    On a shared machine the speed of the cores drifts by tens of percent within minutes, so
    ratios are taken within a round and their median reported.
    """
    name = f"{workload.name}_b{batch_size}"
    for system in systems:
        asyncio.run(run_load(f"{system.inference}/predictions/{name}", workload.body, conc,
                             args.warmup, workload.content_type))
    runs: dict[str, list] = {s.name: [] for s in systems}
    ceilings = []
    for round_index in range(args.rounds):
        ceilings.append(ceiling.measure(workload, store, batch_size, args.duration / 2))
        order = systems if round_index % 2 == 0 else systems[::-1]
        for system in order:
            runs[system.name].append(asyncio.run(run_load(
                f"{system.inference}/predictions/{name}", workload.body, conc, args.duration,
                workload.content_type)))
    rows = []
    for system in systems:
        results = runs[system.name]
        latencies = sorted(x for r in results for x in r.latencies)
        front, workers = system.rss()
        row = {"system": system.name, "model": workload.name, "batch": batch_size,
               "conc": conc, "rps": statistics.median(r.throughput for r in results),
               "p50": _pct(latencies, 50), "p90": _pct(latencies, 90),
               "p99": _pct(latencies, 99), "errors": sum(r.errors for r in results),
               "front_mb": front, "workers_mb": workers,
               "ceiling": statistics.median(c["throughput"] for c in ceilings),
               "ceiling_p50": statistics.median(c["p50"] for c in ceilings) * 1e3,
               "x_ceiling": statistics.median(r.throughput / c["throughput"]
                                              for r, c in zip(results, ceilings))}
        if system.name == "tsf" and "torchserve" in runs:
            row["x_torchserve"] = statistics.median(
                a.throughput / b.throughput for a, b in zip(results, runs["torchserve"])
                if b.throughput)
        rows.append(row)
    return rows


def _pct(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))] * 1e3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds per point; ratios are their median")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-delay", type=int, default=5, help="ms")
    parser.add_argument("--systems", nargs="+", default=["tsf", "torchserve"])
    parser.add_argument("--workloads", nargs="+", default=["mlp", "conv", "jpeg"])
    parser.add_argument("--torchserve-venv", type=Path, default=Path(".venv-ts"))
    args = parser.parse_args()
    args.torchserve_venv = args.torchserve_venv.absolute()

    store = Path(tempfile.mkdtemp(prefix="tsf-bench-store-"))
    chosen = workloads.build(store, tuple(args.workloads))
    systems, ready = [], {}
    try:
        for system_name in args.systems:
            if system_name == "torchserve" and \
                    not (args.torchserve_venv / "bin" / "torchserve").exists():
                print(f"TorchServe skipped: no {args.torchserve_venv}/bin/torchserve "
                      "(make bench-torchserve)")
                continue
            system = Tsf(store) if system_name == "tsf" else \
                TorchServe(store, args.torchserve_venv)
            systems.append(system)
            ready[system_name] = system.ready
        rows = []
        for workload in chosen:
            for batch in workload.batch_sizes:
                name = f"{workload.name}_b{batch}"
                for system in systems:
                    system.register(f"{workload.name}.mar", name, batch, args.max_batch_delay)
                try:
                    for conc in args.concurrency:
                        rows.extend(measure_point(systems, workload, batch, conc, store, args))
                finally:
                    for system in systems:
                        system.unregister(name)
    finally:
        for system in systems:
            system.stop()
    report(sorted(rows, key=lambda r: r["system"] != "tsf"), ready)
    return 0


def report(rows: list[dict], ready: dict) -> None:
    print("time to ready: " + ", ".join(f"{k} {v:.2f} s" for k, v in ready.items()))
    print("| system | model | batch | conc | req/s | p50 ms | p90 ms | p99 ms | errors | "
          "front MB | workers MB | ceiling/s | ceiling p50 ms | x ceiling | x TorchServe |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        versus = f"{r['x_torchserve']:.2f}" if "x_torchserve" in r else ""
        print(f"| {r['system']} | {r['model']} | {r['batch']} | {r['conc']} | {r['rps']:.0f} | "
              f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['errors']} | "
              f"{r['front_mb']:.0f} | {r['workers_mb']:.0f} | {r['ceiling']:.0f} | "
              f"{r['ceiling_p50']:.2f} | {r['x_ceiling']:.2f} | {versus} |")


if __name__ == "__main__":
    sys.exit(main())

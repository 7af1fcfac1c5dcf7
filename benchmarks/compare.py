"""tsf against the in-process ceiling, TorchServe 0.12, LitServe and a bare-Tornado floor.

    python benchmarks/compare.py [--load wrk|python] [--duration 5] [--rounds 3]
                                 [--concurrency 1 8 32 64]
                                 [--workloads mlp conv jpeg jpeg-int8]
                                 [--systems tsf torchserve litserve tornado tsf-asyncio]
                                 [--out DIR]

Builds the workloads (tiny MLP on JSON; ResNet-18 on raw tensors; ``jpeg``, ResNet-18 behind
``image_classifier`` on JPEG input, TorchServe's own handler serving the same archive; and
``jpeg-int8``, that archive through ``tsf optimize --aot --quantize int8``, tsf only: see
``workloads.py``) and starts every system on 127.0.0.1 side by side.  Each point runs
in rounds: the in-process ceiling, then each system in alternating order, driven by ``wrk``
(closed loop, keep-alive connections, fixed duration; ``--load python`` uses ``loadgen.py``).
Around every run the front end's CPU time is read from ``/proc``, giving CPU µs per request.
ResNet-18 runs at the batch size whose ceiling is highest, at ``--conv-concurrency``; the JPEG
workloads at batch 4, at ``--image-concurrency``, against the tuned in-process JPEG ceiling
(parallel decode, the next batch's while the model runs: ``ceiling.py``).

Prints one table (throughput, latency percentiles, errors, front-end CPU and memory, ceiling
and per-round ratios) and writes it with a JSON copy and a PNG chart to ``--out``.
``make bench-torchserve`` and ``make bench-litserve`` create ``.venv-ts`` and ``.venv-lit``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import ceiling  # noqa: E402
import workloads  # noqa: E402
from drive import drive  # noqa: E402
from profiled import profile_point  # noqa: E402
from servers import (BareTornado, LitServe, TorchServe, Tsf, cpu_seconds, memory_mb,  # noqa: E402
                     idle_load, wait_idle)

PEERS = ("torchserve", "litserve")
NO_MODEL = ("workers_mb", "ceiling", "x_ceiling")  # columns left blank for the bare floor


def measure_point(systems: list, workload, batch_size: int, conc: int, store: Path,
                  args) -> list[dict]:
    """One (workload, batch, concurrency) point: ``--rounds`` rounds, each measuring the
    ceiling and then every system back to back (in alternating order).

    On a shared machine the speed of the cores drifts by tens of percent within minutes, so
    ratios are taken within a round and their median reported.
    """
    name = f"{workload.name}_b{batch_size}"
    url = {s.name: f"{s.inference}/predictions/{name}" for s in systems}
    for system in systems:
        drive(args.load, url[system.name], workload.body, workload.content_type, conc,
              args.warmup)
    runs: dict[str, list] = {s.name: [] for s in systems}
    cpu_us: dict[str, list] = {s.name: [] for s in systems}
    ceilings = []
    everything = [pid for s in systems for pid in s.front_pids() + s.worker_pids()]
    idle = args.idle_load
    for round_index in range(args.rounds):
        # A run leaves requests queued in a server, which its worker still computes after
        # wrk has gone (2-4 s of ResNet-18 batches): a ceiling measured then shares the cores
        # with it (batch 2: 2-3/s, p50 0.6-1 s, against 23-26/s once the servers are idle),
        # and so would the next system's run.
        wait_idle(everything, idle=idle)
        ceilings.append(ceiling.measure(workload, store, batch_size, args.duration / 2))
        order = systems if round_index % 2 == 0 else systems[::-1]
        for system in order:
            wait_idle(everything, idle=idle)
            pids = system.front_pids()
            before = cpu_seconds(pids)
            run = drive(args.load, url[system.name], workload.body, workload.content_type,
                        conc, args.duration)
            spent = cpu_seconds(pids) - before
            runs[system.name].append(run)
            cpu_us[system.name].append(spent / run.requests * 1e6 if run.requests else 0.0)
    rows = []
    for system in systems:
        results = runs[system.name]
        row = {"system": system.name, "model": workload.name, "batch": batch_size,
               "conc": conc, "rps": statistics.median(r.rps for r in results),
               "p50": statistics.median(r.p50 for r in results),
               "p90": statistics.median(r.p90 for r in results),
               "p99": statistics.median(r.p99 for r in results),
               "errors": sum(r.errors for r in results),
               "cpu_us": statistics.median(cpu_us[system.name]),
               "front_mb": memory_mb(system.front_pids()),
               "workers_mb": memory_mb(system.worker_pids()),
               "ceiling": statistics.median(c["throughput"] for c in ceilings),
               "ceiling_p50": statistics.median(c["p50"] for c in ceilings) * 1e3,
               "x_ceiling": statistics.median(r.rps / c["throughput"]
                                              for r, c in zip(results, ceilings))}
        if system.name == "tsf":
            for peer in PEERS:
                ratios = [a.rps / b.rps for a, b in zip(results, runs.get(peer, [])) if b.rps]
                if ratios:
                    row[f"x_{peer}"] = statistics.median(ratios)
            floors = [a / b for a, b in zip(cpu_us["tsf"], cpu_us.get("tornado", [])) if b]
            if floors:
                row["x_floor_cpu"] = statistics.median(floors)
        rows.append(row)
    return rows


def best_conv_batch(workload, store: Path, duration: float) -> int:
    """The candidate batch size with the highest in-process samples per second."""
    speeds = {b: ceiling.measure(workload, store, b, duration)["throughput"]
              for b in workload.batch_sizes}
    print("ResNet-18 ceiling by batch size: " +
          ", ".join(f"{b}: {s:.0f}/s" for b, s in speeds.items()))
    return max(speeds, key=speeds.get)


def start_systems(store: Path, args) -> list:
    systems = []
    for system_name in args.systems:
        if system_name == "tsf":
            systems.append(Tsf(store, args.event_loop))
        elif system_name == "tsf-asyncio":
            systems.append(Tsf(store, "asyncio", name=system_name))
        elif system_name == "tsf-2workers":
            systems.append(Tsf(store, args.event_loop, name=system_name, workers=2))
        elif system_name == "tsf-1thread":
            systems.append(Tsf(store, args.event_loop, name=system_name,
                               config={"number_of_threads_per_worker": 1}))
        elif system_name == "tornado":
            systems.append(BareTornado(args.event_loop))
        elif system_name == "torchserve":
            if not (args.torchserve_venv / "bin" / "torchserve").exists():
                print(f"TorchServe skipped: no {args.torchserve_venv}/bin/torchserve "
                      "(make bench-torchserve)")
                continue
            systems.append(TorchServe(store, args.torchserve_venv))
        elif system_name == "litserve":
            if not (args.litserve_venv / "bin" / "litserve").exists():
                print(f"LitServe skipped: no {args.litserve_venv}/bin/litserve "
                      "(make bench-litserve)")
                continue
            systems.append(LitServe(store, args.litserve_venv))
    return systems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", choices=["wrk", "python"], default="wrk")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds per point; ratios are their median")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--conv-concurrency", type=int, nargs="+", default=[16])
    parser.add_argument("--image-concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--max-batch-delay", type=int, default=5, help="ms")
    parser.add_argument("--systems", nargs="+", default=["tsf", "torchserve", "litserve",
                                                         "tornado"])
    parser.add_argument("--workloads", nargs="+", default=["mlp", "conv"],
                        choices=["mlp", "conv", "jpeg", "jpeg-int8"])
    parser.add_argument("--event-loop", default="auto", help="tsf's and the floor's")
    parser.add_argument("--torchserve-venv", type=Path, default=Path(".venv-ts"))
    parser.add_argument("--litserve-venv", type=Path, default=Path(".venv-lit"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after each of tsf's points, record N batches with tsf's "
                        "profiler (PUT /models/{m}/profile) and print where the time goes")
    args = parser.parse_args()
    args.torchserve_venv = args.torchserve_venv.absolute()
    args.litserve_venv = args.litserve_venv.absolute()

    store = Path(tempfile.mkdtemp(prefix="tsf-bench-store-"))
    chosen = workloads.build(store, tuple(args.workloads))
    systems = start_systems(store, args)
    # what the servers use unloaded (LitServe polls), so that waiting for idle servers ends
    args.idle_load = idle_load([pid for s in systems for pid in s.front_pids() + s.worker_pids()])
    rows = []
    try:
        for workload in chosen:
            batches, concurrencies = workload.batch_sizes, args.concurrency
            if workload.name == "conv":
                wait_idle([pid for s in systems for pid in s.front_pids() + s.worker_pids()],
                          idle=args.idle_load)
                batches = [best_conv_batch(workload, store, max(1.0, args.duration / 2))]
                concurrencies = args.conv_concurrency
            elif workload.kind == "image":
                concurrencies = args.image_concurrency
            serving = [s for s in systems if s.supports(workload)]
            for batch in batches:
                name = f"{workload.name}_b{batch}"
                for system in serving:
                    system.register(workload, name, batch, args.max_batch_delay)
                try:
                    for conc in concurrencies:
                        rows.extend(measure_point(serving, workload, batch, conc, store, args))
                        if args.profile and serving[0].name == "tsf":
                            profile_point(serving[0].server, f"{serving[0].inference}"
                                          f"/predictions/{name}", workload, name, conc,
                                          args.profile, args.load, args.out)
                finally:
                    for system in serving:
                        system.unregister(name)
    finally:
        for system in systems:
            system.stop()
        shutil.rmtree(store, ignore_errors=True)
    ready = {s.name: s.ready for s in systems if s.ready == s.ready}  # LitServe: NaN if unused
    rows.sort(key=lambda r: (not r["system"].startswith("tsf"), r["system"]))
    text = report(rows, ready, args)
    print(text)
    write_results(args.out, text, rows, ready)
    return 0


def report(rows: list[dict], ready: dict, args) -> str:
    def cell(row: dict, key: str, digits: int = 0) -> str:
        value = row.get(key)
        if value is None or (row["system"] == "tornado" and key in NO_MODEL):
            return ""
        return f"{value:.{digits}f}"

    lines = [f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load: {args.load}, "
             f"{args.rounds} rounds of {args.duration:g} s per point, max_batch_delay "
             f"{args.max_batch_delay} ms",
             "time to ready: " + ", ".join(f"{k} {v:.2f} s" for k, v in ready.items()), "",
             "| system | model | batch | conc | req/s | p50 ms | p90 ms | p99 ms | errors | "
             "front CPU µs/req | front MB | workers MB | ceiling/s | x ceiling | "
             "tsf/TorchServe | tsf/LitServe | tsf CPU/floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['model']} | {r['batch']} | {r['conc']} | {r['rps']:.0f} | "
            f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['errors']} | "
            f"{r['cpu_us']:.0f} | {r['front_mb']:.0f} | {cell(r, 'workers_mb')} | "
            f"{cell(r, 'ceiling')} | {cell(r, 'x_ceiling', 2)} | {cell(r, 'x_torchserve', 2)} | "
            f"{cell(r, 'x_litserve', 2)} | {cell(r, 'x_floor_cpu', 2)} |")
    return "\n".join(lines)


def write_results(out: Path, text: str, rows: list[dict], ready: dict) -> None:
    """``compare.md`` (the table), ``compare.json`` (the rows) and ``compare.png`` (the chart)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(text + "\n")
    (out / "compare.json").write_text(json.dumps({"ready": ready, "rows": rows}, indent=1))
    try:
        import chart
    except ImportError as exc:
        print(f"chart skipped ({exc.name} is not installed: "
              "pip install -r benchmarks/requirements.txt)")
        return
    if chart.write_chart(rows, out / "compare.png"):
        print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")
    else:
        print(f"wrote {out / 'compare.md'} (no MLP points to chart)")


if __name__ == "__main__":
    sys.exit(main())

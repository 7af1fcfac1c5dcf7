"""Data capture's cost: tsf with capture off against tsf with capture on, side by side.

    python benchmarks/capture.py [--workloads mlp jpeg] [--concurrency 16] [--duration 10]
                                 [--rounds 6] [--load wrk|python] [--out DIR]

Two ``tsf serve`` from this checkout serve the same archives: ``off`` without capture, ``on``
with every answered request captured (``sampling_percent: 100``, ``mode: both``, the built-in
``jsonl`` sink, predictions kept for feedback, drift on; ``--capture`` changes them).  Each point is driven in alternating
rounds (off on, then on off, ...) after a warm-up, each round after both servers are idle, so a
busy machine weighs on both sides alike.  Per round: throughput, p99 and the front end's CPU
time per request; the report gives the medians and the median of the per-round on/off ratios,
against the targets (throughput >= 0.95x, p99 <= 1.1x), and checks that the ``on`` server
captured every request it answered and dropped none.

Workloads (``workloads.py``): ``mlp`` at batch 1 (JSON, overhead-dominated: capture's worst
case) and ``jpeg``, ResNet-18 behind the image classifier at batch 4.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import workloads  # noqa: E402
from drive import drive  # noqa: E402
from servers import cpu_seconds, wait_idle  # noqa: E402

from tsf.testing import ServerProcess  # noqa: E402

BATCH = {"mlp": 1, "jpeg": 4}
CAPTURE = {"sampling_percent": 100, "mode": "both", "sinks": ["jsonl"]}
TARGETS = {"rps": 0.95, "p99": 1.1}


class Side:
    """One ``tsf serve``; ``capture`` is what each model is registered with (None: off)."""

    def __init__(self, name: str, store: Path, capture: dict | None) -> None:
        self.name, self.capture = name, capture
        self.server = ServerProcess(model_store=store, config={"log_level": "WARNING"},
                                    env={"TSF_DISABLE_PLUGINS": "stage_timer"})

    def register(self, workload: str, batch: int) -> None:
        params: dict = {"model_name": workload, "batch_size": batch, "max_batch_delay": 5,
                        "initial_workers": 1}
        if self.capture is not None:
            params["capture"] = json.dumps(self.capture)
        self.server.register(f"{workload}.mar", **params).raise_for_status()

    def url(self, workload: str) -> str:
        return f"{self.server.inference}/predictions/{workload}"

    def pids(self) -> list[int]:
        return [self.server.proc.pid] + self.server.worker_pids()

    def counter(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.server.scrape().splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line
                                                   for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.server.stop()


def measure(sides: list[Side], work: workloads.Workload, args: argparse.Namespace
            ) -> dict[str, list[dict]]:
    for side in sides:
        drive(args.load, side.url(work.name), work.body, work.content_type, args.concurrency,
              args.warmup)
    runs: dict[str, list[dict]] = {side.name: [] for side in sides}
    for index in range(args.rounds):
        for side in sides if index % 2 == 0 else sides[::-1]:
            wait_idle([pid for s in sides for pid in s.pids()], timeout=30)
            front = [side.server.proc.pid]
            before = cpu_seconds(front)
            run = drive(args.load, side.url(work.name), work.body, work.content_type,
                        args.concurrency, args.duration)
            spent = cpu_seconds(front) - before
            runs[side.name].append({"rps": run.rps, "p99": run.p99, "errors": run.errors,
                                    "requests": run.requests,
                                    "cpu_us": spent / max(run.requests, 1) * 1e6})
            print(f"  {work.name} round {index + 1} {side.name}: {run.rps:.0f} req/s, p99 "
                  f"{run.p99:.1f} ms, {runs[side.name][-1]['cpu_us']:.0f} µs CPU/req",
                  flush=True)
    return runs


def summary(name: str, runs: dict[str, list[dict]], on: Side) -> dict:
    off_runs, on_runs = runs["off"], runs["on"]
    row = {"workload": name, "batch": BATCH[name]}
    for side, values in runs.items():
        row[side] = {key: statistics.median(v[key] for v in values)
                     for key in ("rps", "p99", "cpu_us")}
        row[side]["errors"] = sum(v["errors"] for v in values)
    row["rps_ratio"] = statistics.median(b["rps"] / a["rps"] for a, b in zip(off_runs, on_runs))
    row["p99_ratio"] = statistics.median(b["p99"] / a["p99"] for a, b in zip(off_runs, on_runs))
    row["cpu_ratio"] = statistics.median(b["cpu_us"] / a["cpu_us"]
                                         for a, b in zip(off_runs, on_runs))
    row["met"] = {"rps": row["rps_ratio"] >= TARGETS["rps"],
                  "p99": row["p99_ratio"] <= TARGETS["p99"]}
    row["captured"] = on.counter("tsf_capture_records_total", model_name=name)
    return row


def table(rows: list[dict], dropped: float, answered: float) -> str:
    lines = [("| workload | batch | off req/s | on req/s | on/off req/s | off p99 ms | "
              "on p99 ms | on/off p99 | on/off front-end CPU | targets |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in r["met"].items())
        lines.append(f"| {r['workload']} | {r['batch']} | {r['off']['rps']:.0f} | "
                     f"{r['on']['rps']:.0f} | {r['rps_ratio']:.3f} | {r['off']['p99']:.1f} | "
                     f"{r['on']['p99']:.1f} | {r['p99_ratio']:.3f} | {r['cpu_ratio']:.3f} | "
                     f"{met} |")
    lines.append(f"\ncapture on: {answered:.0f} requests answered, "
                 f"{sum(r['captured'] for r in rows):.0f} captured, {dropped:.0f} dropped")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=["mlp", "jpeg"],
                        choices=sorted(BATCH))
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--load", choices=["wrk", "python"], default="wrk")
    parser.add_argument("--capture", type=json.loads, default={},
                        help='settings over the "on" side\'s, as JSON: \'{"feedback": false, '
                             '"drift": false}\' measures capture alone, without its analysis')
    parser.add_argument("--out", type=Path, help="write capture.json and capture.md here")
    args = parser.parse_args(argv)

    store = Path(tempfile.mkdtemp(prefix="tsf-capture-bench-"))
    built = {w.name: w for w in workloads.build(store, tuple(args.workloads))}
    sides: list[Side] = []
    rows = []
    try:
        sides = [Side("off", store, None), Side("on", store, {**CAPTURE, **args.capture})]
        for name in args.workloads:
            for side in sides:
                side.register(name, BATCH[name])
            rows.append(summary(name, measure(sides, built[name], args), sides[1]))
        on = sides[1]
        dropped = on.counter("tsf_capture_dropped_records_total")
        answered = on.counter("tsf_requests_total", code="200")
    finally:
        for side in sides:
            side.stop()
    text = table(rows, dropped, answered)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "capture.json").write_text(json.dumps(
            {"rows": rows, "dropped": dropped, "answered": answered,
             "capture": {**CAPTURE, **args.capture}}, indent=2))
        (args.out / "capture.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

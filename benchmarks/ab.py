"""Two tsf source trees side by side: front-end CPU per request, for checking one change.

    python benchmarks/ab.py --a /tmp/base/framework --b framework [--batch 1 8]
                            [--concurrency 32] [--duration 5] [--rounds 5] [--floor]

Starts ``tsf serve`` once from each tree (``PYTHONPATH`` set to it, so the server and its worker
run that code), registers the benchmark MLP at each batch size on both, and drives each point
with wrk in alternating rounds (A B, then B A, ...) after a warm-up.  Per round it reads the
front-end process's user + system CPU time from ``/proc`` before and after, so each side gets
CPU µs per request; ``--floor`` adds the bare-Tornado handler to every round.  It prints the
medians and the median of the per-round B/A ratios.  CPU time is the steadier figure on a
shared machine: it does not count the time a process waits for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))

import workloads  # noqa: E402
from drive import drive  # noqa: E402
from servers import BareTornado, cpu_seconds  # noqa: E402

from tsf.testing import ServerProcess  # noqa: E402


class Side:
    """One ``tsf serve`` running the code under ``source`` (a ``framework`` folder)."""

    def __init__(self, name: str, source: Path, store: Path, event_loop: str) -> None:
        self.name = name
        path = os.pathsep.join([str(source.absolute()), os.environ.get("PYTHONPATH", "")])
        self.server = ServerProcess(model_store=store,
                                    config={"log_level": "WARNING", "event_loop": event_loop},
                                    env={"PYTHONPATH": path.rstrip(os.pathsep),
                                         "TSF_DISABLE_PLUGINS": "stage_timer"})
        self.inference = self.server.inference

    def front_pids(self) -> list[int]:
        return [self.server.proc.pid]

    def register(self, name: str, batch: int, delay_ms: int) -> None:
        self.server.register("mlp.mar", model_name=name, batch_size=batch,
                             max_batch_delay=delay_ms, initial_workers=1).raise_for_status()

    def stop(self) -> None:
        self.server.stop()


def measure(sides: list, url: dict, body: bytes, conc: int, args) -> dict[str, list]:
    """``args.rounds`` alternating rounds over ``sides``: (req/s, CPU µs/req, errors) each."""
    for side in sides:
        drive("wrk", url[side.name], body, "application/json", conc, args.warmup)
    out: dict[str, list] = {s.name: [] for s in sides}
    for round_index in range(args.rounds):
        for side in sides if round_index % 2 == 0 else sides[::-1]:
            before = cpu_seconds(side.front_pids())
            run = drive("wrk", url[side.name], body, "application/json", conc, args.duration)
            spent = cpu_seconds(side.front_pids()) - before
            out[side.name].append((run.rps, spent / max(run.requests, 1) * 1e6, run.errors))
    return out


def pin(sides: list) -> None:
    """Each front end on CPU 0, everything else on the other CPUs, so that a front end's CPU
    time per request does not swing with how the scheduler shares a core with its worker."""
    others = set(range(1, os.cpu_count() or 2)) or {0}
    os.sched_setaffinity(0, others)  # wrk, started by this process, inherits it
    for side in sides:
        for pid in side.front_pids():
            os.sched_setaffinity(pid, {0})
            for child in psutil.Process(pid).children(recursive=True):
                os.sched_setaffinity(child.pid, others)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", type=Path, required=True, help="framework folder of side A")
    parser.add_argument("--b", type=Path, required=True, help="framework folder of side B")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-batch-delay", type=int, default=5, help="ms")
    parser.add_argument("--event-loop", default="auto")
    parser.add_argument("--floor", action="store_true", help="add the bare-Tornado floor")
    parser.add_argument("--pin", action="store_true",
                        help="front ends on CPU 0; workers, wrk and this script on the others")
    args = parser.parse_args()

    store = Path(tempfile.mkdtemp(prefix="tsf-ab-store-"))
    body = workloads.build(store, ("mlp",))[0].body
    sides: list = []
    try:
        sides = [Side("A", args.a, store, args.event_loop), Side("B", args.b, store,
                                                                 args.event_loop)]
        if args.floor:
            floor = BareTornado(args.event_loop)
            floor.name = "floor"
            sides.append(floor)
        results = []
        for batch in args.batch:
            name = f"mlp_b{batch}"
            for side in sides[:2]:
                side.register(name, batch, args.max_batch_delay)
            if args.pin:
                pin(sides)
            for conc in args.concurrency:
                url = {s.name: f"{s.inference}/predictions/{name}" for s in sides}
                runs = measure(sides, url, body, conc, args)
                results.append(report(batch, conc, runs))
    finally:
        for side in sides:
            side.stop()
    print(json.dumps(results))
    return 0


def report(batch: int, conc: int, runs: dict[str, list]) -> dict:
    row: dict = {"batch": batch, "conc": conc}
    for name, values in runs.items():
        row[name] = {"rps": statistics.median(v[0] for v in values),
                     "cpu_us": statistics.median(v[1] for v in values),
                     "errors": sum(v[2] for v in values),
                     "rounds_cpu_us": [round(v[1]) for v in values]}
    row["b_over_a_cpu"] = statistics.median(b[1] / a[1] for a, b in zip(runs["A"], runs["B"]))
    row["b_over_a_rps"] = statistics.median(b[0] / a[0] for a, b in zip(runs["A"], runs["B"]))
    line = (f"batch {batch} conc {conc}: A {row['A']['rps']:.0f} req/s "
            f"{row['A']['cpu_us']:.0f} µs/req | B {row['B']['rps']:.0f} req/s "
            f"{row['B']['cpu_us']:.0f} µs/req | B/A CPU {row['b_over_a_cpu']:.3f}, "
            f"req/s {row['b_over_a_rps']:.3f}")
    if "floor" in runs:
        row["b_over_floor_cpu"] = statistics.median(
            b[1] / f[1] for b, f in zip(runs["B"], runs["floor"]))
        line += (f" | floor {row['floor']['cpu_us']:.0f} µs/req, B/floor "
                 f"{row['b_over_floor_cpu']:.2f}")
    print(line, flush=True)
    return row


if __name__ == "__main__":
    sys.exit(main())

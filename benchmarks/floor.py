"""One Tornado thread's ceiling: the bare-Tornado floor on asyncio's loop and on uvloop.

    python benchmarks/floor.py [--concurrency 32] [--duration 5] [--rounds 3]

Drives ``bare_tornado.py`` with wrk in alternating rounds and prints, per event loop, requests
per second and CPU µs per request.  1e6 / (CPU µs per request) is the most requests per second
one core can answer with Tornado, whatever the server does on top; docs/scaling-out.md uses it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from drive import drive  # noqa: E402
from servers import BareTornado, cpu_seconds  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", choices=["wrk", "python"], default="wrk")
    parser.add_argument("--loops", nargs="+", default=["asyncio", "uvloop"])
    args = parser.parse_args()
    servers = [BareTornado(loop) for loop in args.loops]
    results: dict[str, list[tuple[float, float]]] = {loop: [] for loop in args.loops}
    try:
        for server in servers:
            drive(args.load, server.inference + "/", b"0", "application/json",
                  args.concurrency, 1)
        for round_index in range(args.rounds):
            pairs = list(zip(args.loops, servers))
            for loop, server in pairs if round_index % 2 == 0 else pairs[::-1]:
                before = cpu_seconds(server.front_pids())
                run = drive(args.load, server.inference + "/", b"0", "application/json",
                            args.concurrency, args.duration)
                spent = cpu_seconds(server.front_pids()) - before
                results[loop].append((run.rps, spent / max(run.requests, 1) * 1e6))
    finally:
        for server in servers:
            server.stop()
    summary = {loop: {"rps": statistics.median(r for r, _ in runs),
                      "cpu_us": statistics.median(c for _, c in runs),
                      "rounds": runs} for loop, runs in results.items()}
    for loop, row in summary.items():
        print(f"{loop:8} {row['rps']:8.0f} req/s  {row['cpu_us']:6.0f} CPU µs/request  "
              f"one-core ceiling {1e6 / row['cpu_us']:6.0f} req/s" if row["cpu_us"] else loop)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

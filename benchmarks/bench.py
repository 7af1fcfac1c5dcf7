"""Benchmark tsf on the demo MLP: throughput and latency at several concurrencies and batch sizes.

    python benchmarks/bench.py --store demo-store [--duration 5] [--concurrency 1 16]

Starts a real ``tsf serve`` on 127.0.0.1, registers the model once per batch size, drives it with
the shared load generator and prints a table.  Also reports front-end RSS and time to ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from loadgen import run_load  # noqa: E402

from tsf.testing import ServerProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="demo-store")
    parser.add_argument("--model", default="mlp.mar")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-batch-delay", type=int, default=5, help="ms")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    started = time.perf_counter()
    server = ServerProcess(model_store=args.store, config={"log_level": "WARNING"})
    ready = time.perf_counter() - started
    body = json.dumps([0.5] * args.features).encode()
    rows = []
    try:
        for batch in args.batch_sizes:
            name = f"bench_b{batch}"
            r = server.register(args.model, model_name=name, batch_size=batch,
                                max_batch_delay=args.max_batch_delay,
                                initial_workers=args.workers)
            assert r.status_code == 200, r.text
            url = f"{server.inference}/predictions/{name}"
            for conc in args.concurrency:
                asyncio.run(run_load(url, body, conc, args.warmup))
                result = asyncio.run(run_load(url, body, conc, args.duration))
                rows.append((batch, conc, result))
            server.manage("DELETE", f"/models/{name}")
        import psutil

        rss = psutil.Process(server.proc.pid).memory_info().rss / 2**20
    finally:
        server.stop()
    print(f"server ready in {ready:.2f} s (process start to listening), front-end RSS "
          f"{rss:.0f} MB, workers per model: {args.workers}")
    print(f"{'batch':>5} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6}")
    for batch, conc, res in rows:
        print(f"{batch:>5} {conc:>4} {res.throughput:>9.0f} {res.median * 1e3:>8.2f} "
              f"{res.percentile(90) * 1e3:>8.2f} {res.percentile(99) * 1e3:>8.2f} "
              f"{res.errors:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

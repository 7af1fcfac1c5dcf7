"""Jobs beside online traffic: online latency with and without a backlog of jobs, the latency of
submitting jobs under load, and the rate at which a backlog drains.

    python benchmarks/jobs_bench.py [--backlog 10000] [--duration 10] [--rounds 3]
                                    [--concurrency 4] [--workload mlp] [--workers 2] [--out DIR]

One ``tsf serve`` (jobs in a SQLite store), the workload registered with ``--workers``
workers and batch size 8.  Each round:

1. **submit**: ``--submit`` jobs posted to ``/jobs/{model}`` by 16 connections while an online
   load runs (submit latency under load; a light model runs them as fast as they come);
2. **online alone**: ``wrk`` (or ``--load python``) at ``--concurrency`` on ``/predictions``;
3. **online with the backlog**: ``--backlog`` jobs written into the store in one transaction
   (as a burst of submits, or a restart, leaves them; the server picks them up within 0.5 s),
   then the same online load while they wait behind it; then, with no online load, the jobs
   finished per second until the backlog is gone.

Steps 2 and 3 run side by side, in alternating order from round to round.

The target (issue 28): online p99 with the backlog within 20 % of online p99 without it.  The
ratios are taken within a round and their median reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import workloads  # noqa: E402
from drive import drive  # noqa: E402
from loadgen import LoadResult  # noqa: E402
from servers import wait_idle  # noqa: E402

from tsf.jobs.records import pack_request  # noqa: E402
from tsf.testing import ServerProcess  # noqa: E402
from tsf.workers.messages import Part, Request  # noqa: E402

def pending(db: Path) -> int:
    """Jobs queued or running, read from the store itself (the metrics lag by 2 s)."""
    with sqlite3.connect(db, timeout=30) as connection:
        return connection.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', "
                                  "'running')").fetchone()[0]


def succeeded(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as connection:
        return connection.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'"
                                  ).fetchone()[0]


def prefill(db: Path, model: str, body: bytes, ctype: str, count: int) -> None:
    """Write ``count`` queued jobs into the store in one transaction."""
    payload = pack_request(Request("bench", [Part("body", body, ctype)],
                                   {"Content-Type": ctype}))
    now = time.time()
    rows = [(uuid.uuid4().hex, model, "model", "predict", "queued", now, now + 86400, payload,
             len(payload)) for _ in range(count)]
    with sqlite3.connect(db, timeout=30) as connection:
        connection.executemany("INSERT INTO jobs (id, model, target, kind, status, created, "
                               "expires, input, input_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               rows)


def wait_drained(db: Path, timeout: float) -> float:
    """Wait until no job is queued or running; the jobs finished per second meanwhile."""
    start, done_before = time.perf_counter(), succeeded(db)
    while pending(db):
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"{pending(db)} jobs were still queued or running after "
                             f"{timeout:.0f} s: the jobs stopped draining")
        time.sleep(0.5)
    elapsed = time.perf_counter() - start
    return (succeeded(db) - done_before) / elapsed if elapsed else 0.0


async def submit_jobs(url: str, body: bytes, count: int, connections: int) -> LoadResult:
    """Post ``count`` jobs over ``connections`` keep-alive connections; their latencies."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    result = LoadResult()
    left = [count]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while left[0] > 0:
                left[0] -= 1
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line[15:]) for line in head.split(b"\r\n")
                               if line[:15].lower() == b"content-length:"), 0)
                await reader.readexactly(length)
                if head[9:12] == b"202":
                    result.latencies.append(time.perf_counter() - start)
                else:
                    result.errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    result.elapsed = time.perf_counter() - started
    return result


def online(args, url: str, body: bytes, ctype: str, duration: float):
    return drive(args.load, url, body, ctype, args.concurrency, duration)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--submit", type=int, default=2000)
    parser.add_argument("--job-share", type=float, default=0.0,
                        help="the server's job_share (its default: 0)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workload", default="mlp", choices=("mlp", "conv"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--load", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tsf-jobs-bench-"))
    [workload] = workloads.build(root / "store", (args.workload,))
    db = root / "jobs.db"
    server = ServerProcess(model_store=root / "store",
                           config={"log_level": "WARNING", "job_store": f"sqlite:///{db}",
                                   "job_store_max_mb": 4096, "job_share": args.job_share},
                           env={"TSF_DISABLE_PLUGINS": "stage_timer"})
    rounds = []
    try:
        r = server.register(f"{workload.name}.mar", model_name="m", batch_size=8,
                            max_batch_delay=5, initial_workers=args.workers)
        r.raise_for_status()
        predict, jobs = f"{server.inference}/predictions/m", f"{server.inference}/jobs/m"
        body, ctype = workload.body, workload.content_type
        online(args, predict, body, ctype, 2.0)  # warm-up
        pids = [server.proc.pid] + server.worker_pids()
        for index in range(args.rounds):
            wait_drained(db, args.drain_timeout)
            wait_idle(pids)
            during: dict = {}
            thread = threading.Thread(target=lambda: during.update(
                run=online(args, predict, body, ctype, args.duration / 2)))
            thread.start()
            submitted = asyncio.run(submit_jobs(jobs, body, args.submit, 16))
            thread.join()
            measured: dict = {}
            # alone and with the backlog side by side, in alternating order
            for step in ("alone", "backlog") if index % 2 == 0 else ("backlog", "alone"):
                wait_drained(db, args.drain_timeout)
                wait_idle(pids)
                if step == "alone":
                    measured["alone"] = online(args, predict, body, ctype, args.duration)
                    continue
                prefill(db, "m", body, ctype, args.backlog)
                time.sleep(0.6)  # the runner looks at the store every 0.5 s
                queued_before = pending(db)
                measured["backlog"] = online(args, predict, body, ctype, args.duration)
                queued_after = pending(db)
                drain_per_s = wait_drained(db, args.drain_timeout)
            alone, backlog = measured["alone"], measured["backlog"]
            row = {"alone": alone.__dict__, "backlog": backlog.__dict__,
                   "during_submit": during["run"].__dict__,
                   "submit": {"jobs": len(submitted.latencies), "errors": submitted.errors,
                              "per_s": submitted.throughput,
                              "p50_ms": submitted.percentile(50) * 1e3,
                              "p99_ms": submitted.percentile(99) * 1e3},
                   "queued_before": queued_before, "queued_after": queued_after,
                   "drain_per_s": drain_per_s}
            rounds.append(row)
            print(f"round {index + 1}: online p99 {alone.p99:.2f} ms alone, {backlog.p99:.2f} "
                  f"ms with {queued_before:.0f} -> {queued_after:.0f} jobs queued; submit "
                  f"p99 {row['submit']['p99_ms']:.2f} ms at {submitted.throughput:.0f}/s; "
                  f"drain {row['drain_per_s']:.0f} jobs/s", flush=True)
    finally:
        server.stop()

    def med(path: list[str]) -> float:
        values = []
        for row in rounds:
            value = row
            for key in path:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    ratios = [row["backlog"]["p99"] / row["alone"]["p99"] for row in rounds]
    left = ", ".join(f"{row['queued_after']:.0f}" for row in rounds)
    table = [f"{args.workload}, {args.workers} workers, batch 8, job_share {args.job_share}, "
             f"online concurrency {args.concurrency}, backlog {args.backlog}, {args.rounds} "
             "rounds (medians)", "",
             "| online | req/s | p50 ms | p99 ms |", "|---|---|---|---|"]
    for name, key in (("alone", "alone"), ("while jobs are submitted", "during_submit"),
                      ("with the backlog queued", "backlog")):
        table.append(f"| {name} | {med([key, 'rps']):.0f} | {med([key, 'p50']):.2f} | "
                     f"{med([key, 'p99']):.2f} |")
    table += ["", f"online p99 with the backlog / alone: {statistics.median(ratios):.2f}x "
              f"(target <= 1.2; rounds {', '.join(f'{r:.2f}' for r in ratios)})",
              "jobs queued or running when the backlog run ended: " + left,
              f"submit: {med(['submit', 'per_s']):.0f} jobs/s, p50 "
              f"{med(['submit', 'p50_ms']):.2f} ms, p99 {med(['submit', 'p99_ms']):.2f} ms "
              "(16 connections, online load running)",
              f"drain: {med(['drain_per_s']):.0f} jobs/s with no online load"]
    print("\n".join(table))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "jobs_bench.md").write_text("\n".join(table) + "\n")
        (args.out / "jobs_bench.json").write_text(json.dumps(rounds, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

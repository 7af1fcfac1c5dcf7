"""One measured run against one URL, by ``wrk`` (default) or the Python load generator.

Both give the same :class:`Run`: throughput, latency percentiles, errors.  ``wrk`` is a C
program, so on a small machine it leaves the cores to the server under test; the Python
generator (``loadgen.py``) needs nothing installed and serves the CI smoke test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loadgen import run_load

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")


@dataclass
class Run:
    """A closed-loop run: successful requests per second, percentiles in ms, failures."""

    requests: int
    rps: float
    p50: float
    p90: float
    p99: float
    errors: int


def drive(tool: str, url: str, body: bytes, content_type: str, concurrency: int,
          duration: float) -> Run:
    """Keep ``concurrency`` keep-alive connections busy on ``url`` for ``duration`` seconds."""
    if tool == "wrk":
        return _wrk(url, body, content_type, concurrency, duration)
    result = asyncio.run(run_load(url, body, concurrency, duration, content_type))
    return Run(len(result.latencies), result.throughput, result.percentile(50) * 1e3,
               result.percentile(90) * 1e3, result.percentile(99) * 1e3, result.errors)


def _wrk(url: str, body: bytes, content_type: str, concurrency: int, duration: float) -> Run:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk, or --load python)")
    with tempfile.NamedTemporaryFile(prefix="bench-body-") as body_file:
        body_file.write(body)
        body_file.flush()
        # two client threads at most: the machine's other cores belong to the server
        cmd = [wrk, "-t", str(min(2, concurrency)), "-c", str(concurrency),
               "-d", f"{max(1, round(duration))}s", "--timeout", "30s", "-s", str(WRK_SCRIPT),
               url, "--", body_file.name, content_type]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}{out.stderr}")
    r = json.loads(lines[-1])
    failed = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - r["non2xx"]
    return Run(ok, ok / (r["duration_us"] / 1e6), r["p50_us"] / 1e3, r["p90_us"] / 1e3,
               r["p99_us"] / 1e3, failed)

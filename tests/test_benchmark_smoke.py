"""A few seconds of the comparison benchmark (tsf only, tiny MLP): the tooling keeps working.

No timing is asserted: figures come from ``make bench-compare``, not from tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts tsf and its workers

ROOT = Path(__file__).resolve().parents[1]


def test_compare_benchmark_runs_and_reports():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--systems", "tsf",
         "--workloads", "mlp", "--duration", "0.5", "--warmup", "0.2", "--concurrency", "1", "4"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| tsf | mlp |")]
    assert len(rows) == 4, out.stdout  # two batch sizes x two concurrencies
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) > 0 and cells[8] == "0", row  # req/s, errors
    assert "time to ready: tsf" in out.stdout

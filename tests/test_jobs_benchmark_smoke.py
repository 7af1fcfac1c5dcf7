"""A few seconds of the jobs benchmark (tiny MLP, a small backlog): the tooling keeps working.

No timing is asserted: figures come from ``benchmarks/jobs_bench.py`` runs, not from tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts tsf and its workers

ROOT = Path(__file__).resolve().parents[1]


def test_jobs_benchmark_runs_and_reports(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "jobs_bench.py"), "--backlog", "5000",
         "--submit", "100", "--duration", "0.5", "--rounds", "1", "--load", "python",
         "--workers", "1", "--drain-timeout", "60", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "online p99 with the backlog / alone" in result.stdout
    [row] = json.loads((tmp_path / "jobs_bench.json").read_text())
    assert row["submit"]["jobs"] == 100 and row["submit"]["errors"] == 0
    assert row["queued_before"] > 0 and row["alone"]["requests"] > 0

"""A few seconds of the offline-batch benchmark (16 JPEGs, one round): the in-process loop,
``tsf batch`` and the online path all run and the report is written.

No timing is asserted: figures come from ``benchmarks/batch_bench.py`` runs, not from tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts tsf, its workers and tsf batch

ROOT = Path(__file__).resolve().parents[1]


def test_batch_benchmark_runs_and_reports(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "batch_bench.py"), "--images", "16",
         "--rounds", "1", "--concurrency", "2", "--duration", "0.5", "--load", "python",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "batch_bench.json").read_text())
    assert all(len(values) == 1 and values[0] > 0 for values in report["rows"].values()), report
    assert "tsf batch / in-process:" in result.stdout

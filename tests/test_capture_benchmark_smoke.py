"""A few seconds of the capture benchmark (capture off against on, tiny MLP): the tooling keeps
working and the capturing side captures every request it answers.

No timing is asserted: figures come from ``benchmarks/capture.py`` runs, not from tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts tsf and its workers

ROOT = Path(__file__).resolve().parents[1]


def test_capture_benchmark_runs_and_reports(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "capture.py"), "--workloads", "mlp",
         "--load", "python", "--duration", "0.5", "--warmup", "0.2", "--rounds", "2",
         "--concurrency", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "capture.json").read_text())
    row = report["rows"][0]
    assert row["workload"] == "mlp" and row["off"]["rps"] > 0 and row["on"]["rps"] > 0
    assert row["off"]["errors"] == row["on"]["errors"] == 0
    assert report["dropped"] == 0 and row["captured"] == report["answered"] > 0
    assert re.search(r"\| mlp \| 1 \| \d+ \| \d+ \| [0-9.]+ \|", result.stdout)

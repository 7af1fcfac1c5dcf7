"""A few seconds of the comparison benchmark (tsf and the bare-Tornado floor, tiny MLP): the
tooling keeps working, with the Python load generator and, where installed, with wrk.

No timing is asserted: figures come from ``make bench-compare``, not from tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts tsf and its workers

ROOT = Path(__file__).resolve().parents[1]


def _compare(out: Path, *flags: str) -> list[list[str]]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--systems", "tsf", "tornado",
         "--workloads", "mlp", "--rounds", "1", "--out", str(out), *flags],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "time to ready: tsf" in result.stdout
    assert (out / "compare.md").read_text().strip() in result.stdout
    assert json.loads((out / "compare.json").read_text())["rows"]
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in result.stdout.splitlines() if line.startswith("| ") and " mlp " in line]


def _check(rows: list[list[str]], points: int) -> None:
    for system in ("tsf", "tornado"):
        mine = [r for r in rows if r[0] == system]
        assert len(mine) == points, rows
        for cells in mine:
            # req/s, errors, front-end CPU µs per request
            assert float(cells[4]) > 0 and cells[8] == "0" and float(cells[9]) > 0, cells
    for cells in rows:
        if cells[0] == "tsf":
            assert float(cells[16]) > 0, cells  # tsf's CPU against the floor's


def test_compare_benchmark_runs_and_reports(tmp_path):
    rows = _compare(tmp_path, "--load", "python", "--duration", "0.5", "--warmup", "0.2",
                    "--concurrency", "1", "4")
    _check(rows, 4)  # two batch sizes x two concurrencies


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_compare_benchmark_with_wrk(tmp_path):
    rows = _compare(tmp_path, "--load", "wrk", "--duration", "1", "--warmup", "0.5",
                    "--concurrency", "4")
    _check(rows, 2)


def test_llm_benchmark_runs_and_reports(tmp_path):
    """The llm workload's tooling, tsf against in-process generate, with a 2-layer model."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "llm.py"), "--systems", "tsf", "generate",
         "--small", "--streams", "2", "--tokens", "8", "--rounds", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "llm.json").read_text())["rows"]
    assert {r["system"] for r in rows} == {"tsf", "generate"}
    for row in rows:
        assert row["errors"] == 0 and row["tok_s"] > 0 and row["ttft_p99_ms"] > 0, row

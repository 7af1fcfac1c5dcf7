"""``tsf batch --ray``: the same handler over Ray Data on a local Ray (2 CPUs, one actor)."""

from __future__ import annotations

import json

import pytest

from .test_batch_cli import doubling, finish, lines, tsf_batch  # noqa: F401 (doubling: a fixture)

pytestmark = pytest.mark.slow
pytest.importorskip("ray.data", reason="ray[data] is not installed (requirements-test.txt)")


def test_the_handler_runs_over_ray_data(doubling, tmp_path):  # noqa: F811
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "x": i}) + "\n" for i in range(40))
                      + "{broken\n")
    out = tmp_path / "out.parquet"
    code, summary, err = finish(tsf_batch(str(doubling), str(source), "-o", str(out), "--ray",
                                          "--ray-cpus", "2", "--workers", "1"), timeout=300)
    assert code == 1, err[-3000:]  # the broken line
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    assert {r["id"]: json.loads(r["output"]) for r in rows} == \
        {f"r{i}": {"y": 2 * i} for i in range(40)}
    [failure] = lines(tmp_path / "out.parquet.failures.jsonl")
    assert failure["id"] == "line-41"
    code, summary, err = finish(tsf_batch(str(doubling), str(source), "-o", str(out), "--ray",
                                          "--ray-cpus", "2", "--resume"), timeout=300)
    assert code == 1 and "41 done by an earlier run" in summary, err[-3000:]

"""``tsf batch``: 1,000 records with 10 corrupt ones, interrupted (Ctrl-C, then kill -9) and
resumed: the output is complete and unique, and nothing finished is computed again; folders,
CSV and Parquet in; JSON Lines and Parquet out; bad archives and inputs exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from tsf.archives.writer import ArchiveSpec, write_archive

DOUBLING_HANDLER = '''
import os
import time


def handle(data, context):
    """Doubles each record's x, writing down each record it runs; "crash" kills the worker."""
    if data is None:
        return None
    out = []
    runs = os.environ.get("TSF_TEST_RUNS")
    for i, row in enumerate(data):
        body = row.get("body")
        record = context.get_request_header(i, "X-Tsf-Record-Id")
        if runs:
            with open(runs, "a") as handle:
                handle.write(record + "\\n")
        if isinstance(body, dict):
            if body.get("x") == "crash":
                os._exit(3)
            time.sleep(float(os.environ.get("TSF_TEST_DELAY", "0")))
            out.append({"y": 2 * int(body["x"])})
        elif isinstance(body, (bytes, bytearray)):
            out.append({"size": len(body)})
        else:
            out.append(str(body).upper())
    return out
'''


@pytest.fixture(scope="module")
def doubling(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("doubling")
    (src / "doubling.py").write_text(textwrap.dedent(DOUBLING_HANDLER))
    (src / "model-config.yaml").write_text("batchSize: 8\nmaxBatchDelay: 20\n")
    store = tmp_path_factory.mktemp("doubling-store")
    write_archive(ArchiveSpec(model_name="doubling", handler=str(src / "doubling.py"),
                              config_file=str(src / "model-config.yaml"),
                              export_path=str(store)))
    return store / "doubling.mar"


def tsf_batch(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tsf.cli", "batch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_lines(path: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() or path.read_text().count("\n") < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


def test_interrupted_twice_then_resumed_the_output_is_complete_and_unique(doubling, tmp_path):
    source = tmp_path / "in.jsonl"
    corrupt = {50 + 95 * k for k in range(10)}
    with open(source, "w") as handle:
        for i in range(1000):
            handle.write("{not json\n" if i in corrupt else json.dumps({"id": f"r{i}", "x": i})
                         + "\n")
    out = tmp_path / "out.parquet"
    runs = tmp_path / "runs.txt"
    env = {"TSF_TEST_RUNS": str(runs), "TSF_TEST_DELAY": "0.004"}
    args = [str(doubling), str(source), "--output", str(out), "--workers", "2"]

    first = tsf_batch(*args, env=env)
    _wait_lines(out / "_pending.jsonl", 150, first)
    first.send_signal(signal.SIGINT)  # Ctrl-C: the records in flight finish, then it stops
    code, summary, err = finish(first)
    assert code == 130, err
    assert "--resume" in summary and not (out / "_pending.jsonl").exists()
    after_first = set(runs.read_text().split())

    second = tsf_batch(*args, "--resume", env=env)
    _wait_lines(out / "_pending.jsonl", 200, second)
    os.killpg(os.getpgid(second.pid), signal.SIGKILL)  # kill -9: nothing is flushed
    second.wait(10)
    assert (out / "_pending.jsonl").exists()

    code, summary, err = finish(tsf_batch(*args, "--resume", env=env))
    assert code == 1, err  # the corrupt lines failed
    assert "done by an earlier run" in summary and "failed in earlier runs" in summary

    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()
    ids = [row["id"] for row in table]
    assert len(ids) == len(set(ids)) == 990
    assert {row["id"]: json.loads(row["output"])["y"] for row in table} == \
        {f"r{i}": 2 * i for i in range(1000) if i not in corrupt}
    failures = lines(tmp_path / "out.parquet.failures.jsonl")
    assert sorted(f["id"] for f in failures) == sorted(f"line-{i + 1}" for i in corrupt)
    assert all("not JSON" in f["error"]["message"] for f in failures)
    runs_count = Counter(runs.read_text().split())
    assert not [r for r in after_first if runs_count[r] > 1]  # finished before Ctrl-C: once
    assert set(runs_count) == set(ids)
    # what ran twice is only what was in flight when kill -9 struck
    assert sum(runs_count.values()) - len(ids) <= 4 * 2 * 8


def test_folders_csv_and_parquet_in_jsonl_out(doubling, tmp_path):
    folder = tmp_path / "files"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"\x00" * 7)
    (folder / "sub" / "b.txt").write_text("hello")
    (folder / ".hidden").write_text("skipped")
    out = tmp_path / "files.jsonl"
    code, summary, err = finish(tsf_batch(str(doubling), str(folder), "-o", str(out)))
    assert code == 0, err
    rows = {r["id"]: r for r in lines(out)}
    assert rows["a.bin"]["output"] == {"size": 7}
    assert rows["sub/b.txt"]["output"] == "HELLO" and rows["sub/b.txt"]["encoding"] == "text"
    assert set(rows) == {"a.bin", "sub/b.txt"}

    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("id,x\nfirst,1\nsecond,2,extra\nthird,3\n")
    out = tmp_path / "rows.jsonl"
    code, summary, err = finish(tsf_batch(str(doubling), str(csv_file), "-o", str(out)))
    assert code == 1, err
    assert {r["id"]: r["output"] for r in lines(out)} == {"first": {"y": 2}, "third": {"y": 6}}
    [failure] = lines(tmp_path / "rows.jsonl.failures.jsonl")
    assert failure["id"] == "second" and "3 fields" in failure["error"]["message"]

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": ["p", "q"], "text": ["ab", "cd"]}), parquet)
    out = tmp_path / "pq.jsonl"
    code, summary, err = finish(tsf_batch(str(doubling), str(parquet), "-o", str(out),
                                          "--id-field", "key", "--input-field", "text"))
    assert code == 0, err
    assert {r["id"]: r["output"] for r in lines(out)} == {"p": "AB", "q": "CD"}
    code, _, err = finish(tsf_batch(str(doubling), str(parquet), "-o", str(out)))
    assert code == 2 and "--resume" in err  # the output exists


def test_a_record_that_crashes_the_worker_fails_alone_and_bad_setups_exit_2(doubling, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps({"id": f"r{i}", "x": "crash" if i == 3 else i})
                                for i in range(6)) + "\n")
    out = tmp_path / "out.jsonl"
    code, summary, err = finish(tsf_batch(str(doubling), str(source), "-o", str(out),
                                          "--batch-size", "1"))
    assert code == 1, err
    assert sorted(r["id"] for r in lines(out)) == ["r0", "r1", "r2", "r4", "r5"]
    [failure] = lines(tmp_path / "out.jsonl.failures.jsonl")
    assert failure["id"] == "r3" and failure["error"]["code"] == 503
    code, _, err = finish(tsf_batch(str(tmp_path / "nothing.mar"), str(source), "-o",
                                    str(tmp_path / "x.jsonl")))
    assert code == 2 and "no archive" in err
    code, _, err = finish(tsf_batch(str(doubling), str(tmp_path / "missing.jsonl"), "-o",
                                    str(tmp_path / "y.jsonl")))
    assert code == 2 and "does not exist" in err

"""Jobs survive the server: kill -9 with jobs queued and running, start again, and every job
ends succeeded with one result; a damaged store file stops the start with exit 2, naming it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, wait_for

from .conftest import wait_healthy

COUNTING_HANDLER = '''
import os
import time


def handle(data, context):
    """Sleeps as long as each request asks, and writes down every run (for exactly-once)."""
    if data is None:
        return None
    out = []
    for i, row in enumerate(data):
        with open(os.environ["TSF_TEST_RUNS"], "a") as runs:
            runs.write(context.get_request_id(i) + "\\n")
        time.sleep(float(row.get("body") or 0))
        out.append({"job": context.get_request_id(i)})
    return out
'''


@pytest.fixture(scope="module")
def counting_store(tmp_path_factory):
    src = tmp_path_factory.mktemp("counting-src")
    store = tmp_path_factory.mktemp("counting-store")
    (src / "counting.py").write_text(textwrap.dedent(COUNTING_HANDLER))
    write_archive(ArchiveSpec(model_name="counting", handler=str(src / "counting.py"),
                              export_path=str(store)))
    return store


def _kill_hard(server: ServerProcess) -> None:
    """kill -9 the server and its workers at once (its whole process group)."""
    os.killpg(os.getpgid(server.proc.pid), signal.SIGKILL)
    server.proc.wait(10)
    server.stop()


def test_kill_9_with_jobs_queued_and_running_loses_none(counting_store, tmp_path):
    runs = tmp_path / "runs.txt"
    runs.touch()
    config = {"job_store": f"sqlite:///{tmp_path / 'jobs.db'}", "job_max_attempts": 3}
    env = {"TSF_TEST_RUNS": str(runs)}
    first = ServerProcess(model_store=counting_store, models=["counting=counting.mar"],
                          config=config, env=env)
    try:
        wait_healthy(first)
        ids = [first.post("/jobs/counting", data=b"0.8").json()["id"] for _ in range(6)]
        wait_for(lambda: any(first.get(f"/jobs/{i}").json()["status"] == "running"
                             for i in ids), 30, "no job started")
        wait_for(lambda: runs.read_text().strip(), 30, "no run recorded")
        _kill_hard(first)
    finally:
        first.stop()
    interrupted = runs.read_text().split()
    assert len(interrupted) < 6  # jobs were still queued when the server died
    second = ServerProcess(model_store=counting_store, models=["counting=counting.mar"],
                           config=config, env=env)
    try:
        wait_healthy(second)

        def all_done():
            docs = [second.get(f"/jobs/{i}").json() for i in ids]
            return docs if all(d["status"] not in ("queued", "running") for d in docs) else None

        docs = wait_for(all_done, 120, f"jobs did not finish:\n{second.log()[-3000:]}", 0.2)
        assert [d["status"] for d in docs] == ["succeeded"] * 6, docs
        for job_id in ids:  # one result each, the job's own
            assert second.get(f"/jobs/{job_id}/result").json() == {"job": job_id}
        listed = second.get("/jobs", params={"model": "counting"}).json()["jobs"]
        assert sorted(j["id"] for j in listed) == sorted(ids)
        executions = Counter(runs.read_text().split())
        assert set(executions) == set(ids)
        for doc in docs:  # the job cut short by the kill ran again, and only that one
            assert executions[doc["id"]] == doc["attempts"], (doc, executions)
            assert doc["attempts"] == (2 if doc["id"] in interrupted else 1), doc
    finally:
        second.stop()


def _serve(config_file, workspace) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tsf.cli", "serve", "--ts-config", str(config_file),
         "--inference-address", "http://127.0.0.1:0", "--management-address",
         "http://127.0.0.1:0", "--metrics-address", "http://127.0.0.1:0",
         "--workspace", str(workspace)], capture_output=True, text=True, timeout=60)


def test_a_damaged_store_file_stops_the_start_with_exit_2_naming_it(tmp_path):
    bad = tmp_path / "jobs.db"
    bad.write_bytes(b"\x00not sqlite\xff" * 1000)
    config = tmp_path / "config.properties"
    config.write_text(f"job_store=sqlite:///{bad}\n")
    done = _serve(config, tmp_path / "ws")
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(bad) in done.stderr and "move it aside" in done.stderr
    config.write_text("job_store=carrier-pigeon://nowhere\n")
    done = _serve(config, tmp_path / "ws")
    assert done.returncode == 2 and "invalid job_store" in done.stderr


def test_sigterm_drains_at_once_and_gives_the_jobs_back_unspent(counting_store, tmp_path):
    runs = tmp_path / "runs.txt"
    runs.touch()
    config = {"job_store": f"sqlite:///{tmp_path / 'jobs.db'}", "job_max_attempts": 1}
    env = {"TSF_TEST_RUNS": str(runs)}
    first = ServerProcess(model_store=counting_store, models=["counting=counting.mar"],
                          config=config, env=env)
    try:
        wait_healthy(first)
        ids = [first.post("/jobs/counting", data=b"0.05").json()["id"] for _ in range(60)]
        wait_for(lambda: runs.read_text().strip(), 30, "no job started")
        first.proc.send_signal(signal.SIGTERM)
        first.proc.wait(10)  # held and queued jobs are given back; it does not wait for them
        assert first.proc.returncode == 0
    finally:
        first.stop()
    second = ServerProcess(model_store=counting_store, models=["counting=counting.mar"],
                           config=config, env=env)
    try:
        wait_healthy(second)
        docs = wait_for(lambda: (lambda d: d if all(x["status"] == "succeeded" for x in d)
                                 else None)([second.get(f"/jobs/{i}").json() for i in ids]),
                        120, "the jobs given back did not run")
        # with job_max_attempts=1 a job counted twice would have failed: given back unspent
        assert {d["attempts"] for d in docs} == {1}
    finally:
        second.stop()

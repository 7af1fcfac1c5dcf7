"""Two replicas on one Redis: a job submitted to one may run on the other, either answers
GET and DELETE for any job, and a replica killed mid-job has its job run again by the other."""

from __future__ import annotations

import os
import signal

import pytest

from tsf.testing import ServerProcess, wait_for

from .conftest import wait_healthy
from .test_jobs_durability import counting_store  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def replicas(counting_store, redis_url, tmp_path_factory):  # noqa: F811
    url = redis_url.replace("db=0", "db=3")
    folder = tmp_path_factory.mktemp("replicas")
    started = []
    try:
        for name in ("a", "b"):
            runs = folder / f"runs-{name}.txt"
            runs.touch()
            server = ServerProcess(
                model_store=counting_store, models=["counting=counting.mar"],
                config={"job_store": url, "job_visibility_timeout": 1.5,
                        "job_replica_id": f"replica-{name}"},
                env={"TSF_TEST_RUNS": str(runs)})
            server.runs = runs  # type: ignore[attr-defined]
            started.append(server)
        for server in started:
            wait_healthy(server)
        yield started
    finally:
        for server in started:
            server.stop()


def _done(server: ServerProcess, ids: list[str], timeout: float = 60.0) -> list[dict]:
    def all_done():
        docs = [server.get(f"/jobs/{i}").json() for i in ids]
        return docs if all(d["status"] not in ("queued", "running") for d in docs) else None

    return wait_for(all_done, timeout, "the jobs did not finish", 0.1)


def _runs(server: ServerProcess) -> list[str]:
    return server.runs.read_text().split()  # type: ignore[attr-defined]


def test_replicas_share_the_queue_and_answer_for_each_others_jobs(replicas):
    a, b = replicas
    ids = [a.post("/jobs/counting", data=b"0.3").json()["id"] for _ in range(12)]
    docs = _done(b, ids)
    assert [d["status"] for d in docs] == ["succeeded"] * 12
    for job_id in ids:
        assert b.get(f"/jobs/{job_id}/result").json() == {"job": job_id}
    ran_a, ran_b = set(_runs(a)), set(_runs(b))
    assert ran_a | ran_b == set(ids) and not ran_a & ran_b
    assert ran_a and ran_b  # both replicas took jobs submitted to a
    long = a.post("/jobs/counting", data=b"3").json()["id"]
    wait_for(lambda: b.get(f"/jobs/{long}").json()["status"] == "running", 30, "not running")
    cancelled = b.request("DELETE", b.inference, f"/jobs/{long}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert a.get(f"/jobs/{long}").json()["status"] == "cancelled"
    # the store's figures, the same on every replica (refreshed every few seconds)
    wait_for(lambda: 'tsf_jobs{status="cancelled"} 1.0' in a.scrape(), 20, "no figures")
    wait_for(lambda: 'tsf_jobs{status="cancelled"} 1.0' in b.scrape(), 20, "no figures")
    assert 'tsf_jobs{status="succeeded"} 12.0' in b.scrape()


def test_a_replica_killed_mid_job_has_its_job_run_by_the_other(replicas):
    a, b = replicas
    before = {id(s): len(_runs(s)) for s in replicas}
    job = b.post("/jobs/counting", data=b"2").json()["id"]
    wait_for(lambda: job in _runs(a) + _runs(b), 30, "the job did not start")
    victim, survivor = (a, b) if job in _runs(a) else (b, a)
    os.killpg(os.getpgid(victim.proc.pid), signal.SIGKILL)
    victim.proc.wait(10)
    [doc] = _done(survivor, [job])
    assert doc["status"] == "succeeded" and doc["attempts"] == 2, doc
    assert survivor.get(f"/jobs/{job}/result").json() == {"job": job}
    assert _runs(victim)[before[id(victim)]:] == [job]
    assert _runs(survivor)[before[id(survivor)]:] == [job]

"""Batching observed through a real server, and the fault paths: killed workers, timeouts."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tsf.testing import ServerProcess, assert_error


@pytest.fixture(scope="module")
def server(model_store):
    server = ServerProcess(model_store=model_store, config={"job_queue_size": 10})
    yield server
    server.stop()


def _burst(server, path, count, **kwargs):
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: server.post(path, **kwargs), range(count)))


def test_concurrent_requests_are_batched(server):
    assert server.register("echo.mar", batch_size=8, max_batch_delay=500).status_code == 200
    responses = _burst(server, "/predictions/echo", 8, json=[1])
    assert all(r.status_code == 200 for r in responses)
    sizes = [r.json()["batch"] for r in responses]
    assert max(sizes) > 1, sizes  # requests shared a batch
    assert sum(1 for s in sizes if s > 1) >= 2
    text = server.scrape()
    count = next(l for l in text.splitlines()
                 if l.startswith('tsf_batch_size_count{model_name="echo"'))
    total = next(l for l in text.splitlines()
                 if l.startswith('tsf_batch_size_sum{model_name="echo"'))
    assert float(total.split()[-1]) == 8 and float(count.split()[-1]) < 8
    assert server.manage("DELETE", "/models/echo").status_code == 200


def test_batch_delay_counts_from_the_first_request(server):
    # batch_size 8 with a 1.5 s delay: a lone request waits for the delay, not longer
    assert server.register("echo.mar", model_name="slowbatch", batch_size=8,
                           max_batch_delay=1500).status_code == 200
    start = time.monotonic()
    response = server.post("/predictions/slowbatch", json=[1])
    elapsed = time.monotonic() - start
    assert response.status_code == 200 and response.json()["batch"] == 1
    assert 1.4 <= elapsed < 10, elapsed
    assert server.manage("DELETE", "/models/slowbatch").status_code == 200


def test_full_queue_answers_503_at_once(server):
    assert server.register("sleepy.mar", model_name="busy").status_code == 200
    # one request occupies the only worker and one more waits in its socket
    # (worker_pipeline_depth 2); the queue holds 10; the rest are refused at once
    responses = _burst(server, "/predictions/busy", 16, data=b"0.5",
                       headers={"Content-Type": "text/plain"})
    codes = sorted(r.status_code for r in responses)
    assert codes.count(503) >= 3 and codes.count(200) >= 6, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert_error(refused, 503, "ServiceUnavailableException", "job_queue_size")
    assert server.manage("DELETE", "/models/busy").status_code == 200


def _wait_until_served(server, model, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        r = server.post(f"/predictions/{model}", data=b"0", headers={"Content-Type": "text/plain"})
        if r.status_code == 200:
            return
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)


def _worker_pid(server, model):
    workers = server.manage("GET", f"/models/{model}").json()[0]["workers"]
    return workers[0]["pid"]


def test_killed_worker_fails_only_its_batch_and_is_restarted(server):
    assert server.register("sleepy.mar", model_name="victim").status_code == 200
    pid = _worker_pid(server, "victim")
    with ThreadPoolExecutor(1) as pool:
        inflight = pool.submit(server.post, "/predictions/victim", data=b"5",
                               headers={"Content-Type": "text/plain"})
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        response = inflight.result(timeout=30)
    assert_error(response, 503, "WorkerDiedException", "died")
    _wait_until_served(server, "victim")  # the next requests succeed on a restarted worker
    assert _worker_pid(server, "victim") != pid
    assert "worker" in server.log() and "died" in server.log()
    assert server.get("/ping").status_code == 200
    assert server.manage("DELETE", "/models/victim").status_code == 200


def test_ping_is_unhealthy_while_a_model_lacks_workers(server):
    assert server.register("fn.tar.gz", model_name="pinged").status_code == 200
    os.kill(_worker_pid(server, "pinged"), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        r = server.get("/ping")
        if r.status_code == 503:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert r.json()["status"] == "Unhealthy" and "pinged" in r.json()["message"]
    deadline = time.monotonic() + 60
    while server.get("/ping").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert server.manage("DELETE", "/models/pinged").status_code == 200


def test_response_timeout_kills_the_worker_and_answers_504(server):
    assert server.register("sleepy.mar", model_name="slow", response_timeout=2).status_code == 200
    start = time.monotonic()
    response = server.post("/predictions/slow", data=b"30", headers={"Content-Type": "text/plain"})
    assert_error(response, 504, "WorkerTimeoutException", "response_timeout")
    assert time.monotonic() - start < 15
    _wait_until_served(server, "slow")
    assert server.manage("DELETE", "/models/slow").status_code == 200


def test_a_batch_sent_behind_a_killed_workers_batch_is_queued_again(server):
    # worker_pipeline_depth 2 (the default): the second request is sent to the busy worker and
    # waits in its socket; the worker dies before beginning it, so it is served by the next one
    assert server.register("sleepy.mar", model_name="piped").status_code == 200
    pid = _worker_pid(server, "piped")
    headers = {"Content-Type": "text/plain"}
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(server.post, "/predictions/piped", data=b"8", headers=headers)
        time.sleep(1.5)
        waiting = pool.submit(server.post, "/predictions/piped", data=b"0", headers=headers)
        time.sleep(1.5)
        os.kill(pid, signal.SIGKILL)
        first, second = running.result(timeout=60), waiting.result(timeout=60)
    assert_error(first, 503, "WorkerDiedException", "died")
    assert second.status_code == 200 and second.json() == {"slept": 0.0}, second.text
    assert "were queued again" in server.log()
    assert _worker_pid(server, "piped") != pid
    assert server.manage("DELETE", "/models/piped").status_code == 200


def test_response_timeout_counts_from_when_the_worker_begins_a_batch(server):
    # two batches of 2 s each, sent together to one worker with a 3 s response_timeout: the
    # second waits 2 s in the worker's socket and is not timed out for it
    assert server.register("sleepy.mar", model_name="queued2", response_timeout=3
                           ).status_code == 200
    pid = _worker_pid(server, "queued2")
    responses = _burst(server, "/predictions/queued2", 2, data=b"2",
                       headers={"Content-Type": "text/plain"})
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert _worker_pid(server, "queued2") == pid  # not killed for a timeout
    assert server.manage("DELETE", "/models/queued2").status_code == 200

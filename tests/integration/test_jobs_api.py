"""The job API against a real server: submit, poll, result, Prefer: respond-async,
Idempotency-Key, list, cancel, failures, bad input, callbacks (signed, retried), metrics, TTL
and the store's size bound."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest
import requests

from tsf.testing import ServerProcess, assert_error, wait_for

from .conftest import wait_healthy

SECRET = "s3cret"


class Receiver:
    """A local HTTP server that records the callbacks it gets and answers each with the next
    status of ``statuses`` (200 once they run out)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, bytes]] = []
        self.statuses: list[int] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.calls.append((dict(self.headers), body))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def server(model_store):
    config = {"job_callback_secret": SECRET, "job_callback_backoff": 0.2,
              "allowed_urls": r"http://127\.0\.0\.1:\d+/hook.*", "max_request_size": 200000}
    s = ServerProcess(model_store=model_store, config=config,
                      models=["echo=echo.mar", "sleepy=sleepy.mar", "picky=picky.mar",
                              "teapot=teapot.mar"])
    try:
        wait_healthy(s)
        yield s
    finally:
        s.stop()


def finished(server: ServerProcess, job_id: str, timeout: float = 60.0) -> dict:
    def done():
        doc = server.get(f"/jobs/{job_id}").json()
        return doc if doc["status"] not in ("queued", "running") else None

    return wait_for(done, timeout, f"job {job_id} did not finish:\n{server.log()[-3000:]}", 0.1)


def test_submit_poll_and_fetch_the_result(server):
    r = server.post("/jobs/echo", json={"x": 1}, headers={"X-Test": "kept"})
    assert r.status_code == 202, r.text
    doc = r.json()
    assert r.headers["Location"] == f"/jobs/{doc['id']}"
    assert doc["status"] == "queued" and doc["model"] == "echo" and doc["attempts"] == 0
    done = finished(server, doc["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["started"] and done["finished"] and done["expires"]
    result = server.get(f"/jobs/{doc['id']}/result")
    assert result.status_code == 200 and result.headers["Content-Type"] == "application/json"
    body = result.json()
    # the handler saw the client's body and headers; its request id is the job's id
    assert body["echo"] == {"x": 1} and body["header"] == "kept"
    assert body["request_id"] == doc["id"]


def test_prefer_respond_async_on_predictions_makes_a_job(server):
    r = server.post("/predictions/echo/1.0", data=b"plain text",
                    headers={"Prefer": "respond-async, wait=5", "Content-Type": "text/plain"})
    assert r.status_code == 202 and r.headers["Preference-Applied"] == "respond-async"
    job = r.json()
    assert job["version"] == "1.0"
    assert finished(server, job["id"])["status"] == "succeeded"
    assert server.get(f"/jobs/{job['id']}/result").json()["echo"] == "plain text"
    online = server.post("/predictions/echo", data=b"now", headers={"Prefer": "return=minimal"})
    assert online.status_code == 200 and online.json()["echo"] == "now"


def test_idempotency_key_returns_the_same_job(server):
    headers = {"Idempotency-Key": "order-42"}
    first = server.post("/jobs/echo", json=[1], headers=headers)
    again = server.post("/jobs/echo", json=[1], headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = server.post("/jobs/echo", json=[2], headers=headers)
    assert_error(other, 409, text="another request")
    assert_error(server.post("/jobs/echo", json=[1], headers={"Idempotency-Key": "é"}), 400)


def test_failed_jobs_keep_the_handlers_error(server):
    bad = server.post("/jobs/picky", data=b"bad").json()
    teapot = server.post("/jobs/teapot", data=b"x").json()
    for job, code in ((bad, 400), (teapot, 418)):
        done = finished(server, job["id"])
        assert done["status"] == "failed" and done["error"]["code"] == code, done
        body = assert_error(server.get(f"/jobs/{job['id']}/result"), 409, "JobFailedException")
        assert body["error"]["code"] == code


def test_cancel_a_queued_and_a_running_job(server):
    running = server.post("/jobs/sleepy", data=b"3").json()
    wait_for(lambda: server.get(f"/jobs/{running['id']}").json()["status"] == "running", 30,
             "the first job did not start")
    queued = server.post("/jobs/sleepy", data=b"0").json()
    for job in (queued, running):
        r = server.request("DELETE", server.inference, f"/jobs/{job['id']}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert_error(server.request("DELETE", server.inference, f"/jobs/{queued['id']}"), 409)
    assert_error(server.get(f"/jobs/{queued['id']}/result"), 409, text="cancelled")
    time.sleep(3.5)  # the running one's answer arrives and is dropped
    assert server.get(f"/jobs/{running['id']}").json()["status"] == "cancelled"
    assert server.get(f"/jobs/{queued['id']}").json()["started"] is None  # never ran


def test_result_is_404_until_done_and_unknown_jobs_are_404(server):
    job = server.post("/jobs/sleepy", data=b"1").json()
    assert_error(server.get(f"/jobs/{job['id']}/result"), 404, text="not ready")
    assert_error(server.get("/jobs/" + "0" * 32), 404)
    assert_error(server.get("/jobs/../etc/passwd"), 404)
    assert_error(server.get(f"/jobs/{job['id']}/nothing"), 404)
    assert finished(server, job["id"])["status"] == "succeeded"


def test_bad_submits_are_refused_before_anything_is_stored(server):
    assert_error(server.post("/jobs/nosuchmodel", json=1), 404)
    assert_error(server.post("/jobs/echo/9.9", json=1), 404)
    assert_error(server.post("/jobs/echo", data=b"x" * 300000), 413)
    assert_error(server.post("/jobs/echo", json=1,
                             params={"callback_url": "http://169.254.169.254/latest"}), 403)
    assert_error(server.post("/jobs/echo", json=1,
                             headers={"Callback-Url": "file:///etc/passwd"}), 400)
    assert_error(server.post("/jobs/echo", json=1, params={"callback_url": "not a url"}), 400)
    assert_error(server.get("/jobs", params={"status": "weird"}), 400)
    assert_error(server.get("/jobs", params={"page_token": "x"}), 400)
    assert_error(server.post("/jobs/echo", data=b"--x\r\nbroken",
                             headers={"Content-Type": "multipart/form-data; boundary=zz"}), 400)


def test_list_pages_filtered_by_model_and_status(server):
    ids = [server.post("/jobs/echo", json=i).json()["id"] for i in range(5)]
    for job_id in ids:
        finished(server, job_id)
    page = server.get("/jobs", params={"model": "echo", "limit": 2}).json()
    assert len(page["jobs"]) == 2 and "nextPageToken" in page
    seen, token = [], None
    while True:
        params = {"model": "echo", "status": "succeeded", "limit": 3}
        if token:
            params["page_token"] = token
        page = server.get("/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    assert all(j["model"] == "echo" for j in server.get("/jobs?model=echo").json()["jobs"])


def test_callback_is_signed_and_retried_after_a_500(server, receiver):
    receiver.statuses[:] = [500]
    job = server.post("/jobs/echo", json={"cb": True},
                      params={"callback_url": receiver.url}).json()
    assert job["callback"] == {"url": receiver.url, "status": None}
    wait_for(lambda: len(receiver.calls) >= 2, 30, "the callback was not retried")
    (first, body1), (second, body2) = receiver.calls[:2]
    assert body1 == body2 and json.loads(body2)["echo"] == {"cb": True}
    expected = "sha256=" + hmac.new(SECRET.encode(), body2, hashlib.sha256).hexdigest()
    assert second["X-Tsf-Signature-256"] == expected
    assert second["X-Tsf-Job-Id"] == job["id"] and second["X-Tsf-Job-Status"] == "succeeded"
    assert (first["X-Tsf-Delivery-Attempt"], second["X-Tsf-Delivery-Attempt"]) == ("1", "2")
    wait_for(lambda: server.get(f"/jobs/{job['id']}").json()["callback"]["status"]
             == "delivered", 10, "the delivery was not recorded")
    receiver.calls.clear()
    failed = server.post("/jobs/picky", data=b"bad", params={"callback_url": receiver.url})
    wait_for(lambda: receiver.calls, 30, "no callback for a failed job")
    headers, body = receiver.calls[0]
    assert headers["X-Tsf-Job-Status"] == "failed" and json.loads(body)["code"] == 400
    assert headers["X-Tsf-Job-Id"] == failed.json()["id"]


def test_a_job_of_a_model_unregistered_meanwhile_fails_clearly(server):
    r = server.register("sleepy.mar", model_name="shortlived")
    assert r.status_code == 200, r.text
    busy = server.post("/jobs/shortlived", data=b"2").json()
    waiting = server.post("/jobs/shortlived", data=b"0").json()
    wait_for(lambda: server.get(f"/jobs/{busy['id']}").json()["status"] == "running", 30,
             "the job did not start")
    assert server.manage("DELETE", "/models/shortlived").status_code == 200
    # the batch a worker was computing is finished by the unregister, as online ones are
    assert finished(server, busy["id"])["status"] == "succeeded"
    done = finished(server, waiting["id"])
    assert done["status"] == "failed" and "unregistered" in done["error"]["message"], done
    later = server.post("/jobs/shortlived", data=b"0")
    assert_error(later, 404)


def test_job_metrics(server):
    text = server.scrape()
    assert 'tsf_jobs{status="succeeded"}' in text
    assert "tsf_jobs_backlog_per_worker" in text and "tsf_jobs_oldest_queued_seconds" in text
    assert 'tsf_jobs_submitted_total{model_name="echo"}' in text
    assert 'tsf_jobs_finished_total{model_name="echo",status="succeeded"}' in text
    assert 'tsf_job_callbacks_total{outcome="delivered"}' in text


def test_results_expire_after_the_ttl_and_a_full_store_answers_507(model_store):
    server = ServerProcess(model_store=model_store, models=["echo=echo.mar"],
                           config={"job_ttl": 1, "job_store_max_mb": 1,
                                   "max_request_size": 2_000_000})
    try:
        wait_healthy(server)
        job = server.post("/jobs/echo", json="soon gone").json()
        assert finished(server, job["id"])["status"] == "succeeded"
        wait_for(lambda: server.get(f"/jobs/{job['id']}").json()["status"] == "expired", 30,
                 "the job did not expire")
        assert_error(server.get(f"/jobs/{job['id']}/result"), 410)
        wait_for(lambda: server.get(f"/jobs/{job['id']}").status_code == 404, 30,
                 "the expired job was not forgotten")
        big = b"x" * 700_000
        first = server.post("/jobs/echo", data=big, headers={"Prefer": "respond-async"})
        second = server.post("/jobs/echo", data=big)
        assert first.status_code == 202
        assert_error(second, 507, text="job_store_max_mb")
    finally:
        server.stop()

"""Truthful health: /ping, /v2/health/ready and model readiness follow the rule in
tsf.serving.health."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tsf.testing import ServerProcess, wait_for


def _ping(server: ServerProcess) -> tuple[int, dict]:
    response = server.get("/ping", params={"verbose": "true"}, timeout=10)
    return response.status_code, response.json()


def _model(body: dict, name: str) -> dict:
    return next(m for m in body["models"] if m["modelName"] == name)


def _sleep_in_background(server: ServerProcess, model: str, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=server.post, args=(f"/predictions/{model}",), daemon=True,
                              kwargs={"data": str(seconds).encode(), "timeout": 120,
                                      "headers": {"Content-Type": "text/plain"}})
    thread.start()
    return thread


@pytest.mark.slow
def test_one_of_two_workers_lost_is_degraded_not_down(model_store):
    server = ServerProcess(model_store=model_store)
    try:
        assert server.register("fn.tar.gz", initial_workers=2).status_code == 200
        code, body = _ping(server)
        assert code == 200 and body["status"] == "Healthy", body
        assert _model(body, "fn") == {"modelName": "fn", "modelVersion": "1.0",
                                      "state": "Ready", "servingWorkers": 2,
                                      "liveWorkers": 2, "targetWorkers": 2}
        victim = server.manage("GET", "/models/fn").json()[0]["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        seen = []

        def degraded() -> bool:
            seen.append(_ping(server))
            return seen[-1][1]["status"] == "Degraded"

        wait_for(degraded, 20, f"never Degraded: {seen[-3:]}", step=0.01)
        code, body = seen[-1]
        assert code == 200 and _model(body, "fn")["servingWorkers"] == 1, body
        assert "fn 1.0: 1 of 2 workers serving" in body["message"]
        assert all(c == 200 for c, _ in seen), seen  # never reported down while serving
        assert server.get("/v2/health/ready").status_code == 200
        assert server.get("/v2/models/fn/ready").status_code == 200
        assert server.post("/predictions/fn", data=b"x").status_code == 200
        wait_for(lambda: _ping(server)[1]["status"] == "Healthy", 60, "not restored")
    finally:
        server.stop()


@pytest.mark.slow
def test_workers_stalled_on_a_batch_stop_counting_as_serving(model_store):
    server = ServerProcess(model_store=model_store, config={"worker_stall_seconds": 2})
    try:
        assert server.register("sleepy.mar", initial_workers=2,
                               response_timeout=60).status_code == 200
        _sleep_in_background(server, "sleepy", 12)
        wait_for(lambda: _ping(server)[1]["status"] == "Degraded", 10, "one stalled: Degraded")
        code, body = _ping(server)
        assert code == 200 and _model(body, "sleepy")["servingWorkers"] == 1, body
        assert _model(body, "sleepy")["liveWorkers"] == 2
        _sleep_in_background(server, "sleepy", 12)
        wait_for(lambda: _ping(server)[0] == 503, 10, "both stalled: Unhealthy")
        code, body = _ping(server)
        assert body["status"] == "Unhealthy" and body["code"] == 503, body
        assert _model(body, "sleepy")["state"] == "Unavailable"
        assert server.get("/v2/health/ready").status_code == 503
        assert server.get("/v2/models/sleepy/ready").status_code == 503
        assert server.get("/v1/models/sleepy").json()["ready"] is False
        wait_for(lambda: _ping(server)[1]["status"] == "Healthy", 30, "not Healthy after")
        assert server.get("/v2/models/sleepy/ready").status_code == 200
    finally:
        server.stop()


@pytest.mark.slow
def test_a_failed_startup_model_keeps_the_server_unhealthy(model_store):
    server = ServerProcess(model_store=model_store, models=["fn=fn.tar.gz", "broken=broken.mar"])
    try:
        def settled() -> dict | None:
            code, body = _ping(server)
            loaded = any(m["state"] == "Ready" for m in body["models"])
            return body if loaded and "broken" in body["failedStartupModels"] else None

        body = wait_for(settled, 60, "startup models never settled")
        assert body["status"] == "Unhealthy" and body["code"] == 503, body
        assert "startup model broken failed to load" in body["message"]
        assert server.get("/v2/health/ready").status_code == 503
        time.sleep(1.0)
        assert _ping(server)[0] == 503  # final, not a passing state
        # registering the model under that name (fixed) clears the failure
        assert server.register("fn.tar.gz", model_name="broken").status_code == 200
        code, body = _ping(server)
        assert code == 200 and body["status"] == "Healthy", body
    finally:
        server.stop()


def test_a_model_scaled_to_zero_does_not_make_the_server_unhealthy(model_store):
    server = ServerProcess(model_store=model_store)
    try:
        assert server.register("fn.tar.gz", initial_workers=0).status_code == 200
        code, body = _ping(server)
        assert code == 200 and body["status"] == "Healthy", body
        assert _model(body, "fn")["state"] == "ScaledToZero"
        assert server.get("/ping").json() == {"status": "Healthy"}  # terse without verbose
    finally:
        server.stop()

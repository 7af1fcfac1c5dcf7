"""Clients that go away, and graceful stops: abandoned requests leave the queue; SIGTERM drains."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tsf.testing import ServerProcess

pytestmark = pytest.mark.slow


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def _send_and_hang_up(base: str, path: str, body: bytes, wait: float) -> None:
    """POST a request, then close the connection after ``wait`` s without reading the answer."""
    host, port = base.split("//")[1].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
        time.sleep(wait)


def test_clients_that_hang_up_leave_the_queue(model_store):
    server = ServerProcess(model_store=model_store, config={"job_queue_size": 8})
    try:
        assert server.register("sleepy.mar", model_name="slow").status_code == 200
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(server.post, "/predictions/slow", data=b"3",
                               headers={"Content-Type": "text/plain"})
            time.sleep(0.3)  # the only worker is now busy for 3 s
            # three rounds of 7 clients queue 1 s requests and give up after 0.3 s: 21 in all,
            # more than the queue holds (8)
            for _ in range(3):
                hang_ups = [threading.Thread(target=_send_and_hang_up,
                                             args=(server.inference, "/predictions/slow", b"1",
                                                   0.3)) for _ in range(7)]
                for thread in hang_ups:
                    thread.start()
                for thread in hang_ups:
                    thread.join()
            start = time.monotonic()
            response = server.post("/predictions/slow", data=b"0",
                                   headers={"Content-Type": "text/plain"})
            waited = time.monotonic() - start
            assert busy.result().status_code == 200
        # not refused for a full queue, and not behind 20 s of abandoned work
        assert response.status_code == 200, response.text
        assert waited < 5, waited
        text = server.scrape()
        dropped = _metric(text, 'tsf_requests_abandoned_total{model_name="slow",'
                                'model_version="1.0",stage="queued"}')
        assert dropped == 21, text
        described = server.manage("GET", "/models/slow").json()[0]
        assert described["queueLength"] == 0
    finally:
        server.stop()


def test_a_request_sent_to_a_busy_worker_is_skipped_when_its_client_leaves(model_store):
    # worker_pipeline_depth 2: the 3 s request is sent to the worker while it runs the 2 s one,
    # and waits in its socket; its client leaves, so the worker skips it and runs the next
    server = ServerProcess(model_store=model_store)
    try:
        assert server.register("sleepy.mar", model_name="slow").status_code == 200
        headers = {"Content-Type": "text/plain"}
        with ThreadPoolExecutor(1) as pool:
            start = time.monotonic()
            busy = pool.submit(server.post, "/predictions/slow", data=b"2", headers=headers)
            time.sleep(0.3)
            _send_and_hang_up(server.inference, "/predictions/slow", b"3", 0.3)
            after = server.post("/predictions/slow", data=b"0", headers=headers)
            waited = time.monotonic() - start
            assert busy.result().status_code == 200
        assert after.status_code == 200, after.text
        assert waited < 4.5, waited  # 2 s and 0 s run; the abandoned 3 s do not
        text = server.scrape()
        assert _metric(text, 'tsf_requests_abandoned_total{model_name="slow",'
                             'model_version="1.0",stage="queued"}') == 1, text
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_a_running_request_whose_client_left_is_discarded(model_store):
    server = ServerProcess(model_store=model_store)
    try:
        assert server.register("sleepy.mar", model_name="slow").status_code == 200
        _send_and_hang_up(server.inference, "/predictions/slow", b"1", 0.4)
        time.sleep(1.2)  # the worker finishes the batch; its answer has no one to go to
        text = server.scrape()
        assert _metric(text, 'tsf_requests_abandoned_total{model_name="slow",'
                             'model_version="1.0",stage="running"}') == 1, text
        assert server.post("/predictions/slow", data=b"0",
                           headers={"Content-Type": "text/plain"}).status_code == 200
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def _raw_get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str, str]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.getheader("Connection", ""), response.read().decode()


def _raw_post(conn: http.client.HTTPConnection, path: str, body: bytes
              ) -> tuple[int, str, str]:
    conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
    response = conn.getresponse()
    return response.status, response.getheader("Connection", ""), response.read().decode()


def test_sigterm_drains_accepted_work_then_exits_0(model_store):
    server = ServerProcess(model_store=model_store, config={"graceful_shutdown_timeout": 20})
    try:
        assert server.register("sleepy.mar", model_name="slow", batch_size=1).status_code == 200
        host, port = server.inference.split("//")[1].split(":")
        idle = http.client.HTTPConnection(host, int(port), timeout=30)
        assert _raw_get(idle, "/ping")[0] == 200  # an open keep-alive connection
        with ThreadPoolExecutor(4) as pool:
            # 1 running + 3 queued requests of 1 s each: 4 s of accepted work
            accepted = [pool.submit(server.post, "/predictions/slow", data=b"1",
                                    headers={"Content-Type": "text/plain"}) for _ in range(4)]
            time.sleep(0.5)
            stopped_at = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # readiness fails at once, liveness holds, on the connection already open
            status, connection, body = _raw_get(idle, "/ping")
            assert status == 503 and "Draining" in body, body
            assert connection.lower() == "close"
            live = http.client.HTTPConnection(host, int(port), timeout=5)
            with pytest.raises(OSError):  # the listener is closed: new connections are refused
                _raw_get(live, "/v2/health/live")
            answers = [f.result() for f in accepted]
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert server.proc.wait(30) == 0
        assert time.monotonic() - stopped_at < 15
        assert "drained in" in server.log()
    finally:
        server.stop()


def _load(host: str, port: int, path: str, stop: threading.Event, statuses: list,
          failures: list) -> None:
    """POST to ``path`` over one keep-alive connection until the server closes it."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        while not stop.is_set():
            try:
                status, connection, body = _raw_post(conn, path, b"x")
            except ConnectionRefusedError:
                return  # a new connection once the listener closed: refused, as it should be
            except (OSError, http.client.HTTPException) as exc:  # sent and never answered
                failures.append(repr(exc))
                return
            statuses.append(status)
            if status != 200:
                failures.append(body)
            if connection.lower() == "close":
                return
    finally:
        conn.close()


def test_sigterm_to_the_whole_process_tree_under_load_loses_no_request(model_store):
    # What systemd (KillMode=control-group) and `kill -TERM -- -PGID` do: every process of the
    # tree gets SIGTERM at once.  The workers must let the front end drain: the 4 s request
    # and every request of the load are answered 200, no worker is restarted (not even one
    # that dies during the drain), exit 0.
    server = ServerProcess(model_store=model_store, config={"graceful_shutdown_timeout": 30})
    try:
        assert server.register("sleepy.mar", model_name="slow", batch_size=1).status_code == 200
        assert server.register("fn.tar.gz", initial_workers=2).status_code == 200
        assert server.register("fndir", initial_workers=1).status_code == 200
        [idle] = [w["pid"] for w in server.manage("GET", "/models/fndir").json()[0]["workers"]]
        workers = server.worker_pids()
        host, port = server.inference.split("//")[1].split(":")
        stop, statuses, failures = threading.Event(), [], []
        load = [threading.Thread(target=_load, args=(host, int(port), "/predictions/fn", stop,
                                                     statuses, failures), daemon=True)
                for _ in range(32)]
        for thread in load:
            thread.start()
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(server.post, "/predictions/slow", data=b"4",
                               headers={"Content-Type": "text/plain"}, timeout=60)
            time.sleep(1.0)
            assert statuses, "the load has not started"
            os.killpg(server.proc.pid, signal.SIGTERM)  # the server runs in its own session
            time.sleep(0.5)
            os.kill(idle, signal.SIGKILL)  # a worker that dies during the drain: not replaced
            answer = slow.result()
        for thread in load:
            thread.join(30)
        stop.set()
        assert answer.status_code == 200, answer.text
        assert not failures, failures[:5]
        assert server.proc.wait(30) == 0
        time.sleep(0.5)
        assert not [pid for pid in workers if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        log = server.log()
        assert "restarting" not in log and "WorkerDied" not in log, log[-3000:]
        assert "SIGTERM received" in log and "is not replaced" in log, log[-3000:]
    finally:
        server.stop()


def test_requests_on_open_connections_during_drain_are_served_then_closed(model_store):
    server = ServerProcess(model_store=model_store, config={"graceful_shutdown_timeout": 20})
    try:
        assert server.register("sleepy.mar", model_name="slow").status_code == 200
        host, port = server.inference.split("//")[1].split(":")
        keep_alive = http.client.HTTPConnection(host, int(port), timeout=30)
        assert _raw_post(keep_alive, "/predictions/slow", b"0")[0] == 200
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(server.post, "/predictions/slow", data=b"1.5",
                                  headers={"Content-Type": "text/plain"})
            time.sleep(0.3)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # a request on a connection opened before the drain is served, never a 404
            status, connection, body = _raw_post(keep_alive, "/predictions/slow", b"0")
            assert status == 200, body
            assert connection.lower() == "close"
            assert running.result().status_code == 200
        assert server.proc.wait(30) == 0
    finally:
        server.stop()


def test_past_the_grace_period_open_requests_get_503_not_a_dropped_connection(model_store):
    server = ServerProcess(model_store=model_store, config={"graceful_shutdown_timeout": 1})
    try:
        assert server.register("sleepy.mar", model_name="slow").status_code == 200
        with ThreadPoolExecutor(2) as pool:
            long = [pool.submit(server.post, "/predictions/slow", data=b"8",
                                headers={"Content-Type": "text/plain"}) for _ in range(2)]
            time.sleep(0.5)
            server.proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in long]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["type"] == "ServiceUnavailableException"
        assert server.proc.wait(30) == 0
    finally:
        server.stop()


def test_a_second_signal_stops_at_once(model_store):
    server = ServerProcess(model_store=model_store, config={"graceful_shutdown_timeout": 60})
    try:
        assert server.register("sleepy.mar", model_name="slow").status_code == 200
        workers = server.worker_pids()
        assert workers
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.post, "/predictions/slow", data=b"30",
                                  headers={"Content-Type": "text/plain"}, timeout=60)
            time.sleep(0.5)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert server.proc.poll() is None  # draining: waits for the 30 s request
            start = time.monotonic()
            server.proc.send_signal(signal.SIGINT)
            server.proc.wait(10)
            assert time.monotonic() - start < 5
            with pytest.raises(Exception):
                pending.result()  # the connection went with the process
        import psutil

        time.sleep(0.5)
        assert not [pid for pid in workers if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    finally:
        server.stop()


def test_cancelled_grpc_calls_leave_the_queue(model_store):
    import numpy as np
    import tritonclient.grpc as tritonclient_grpc
    from tritonclient.utils import InferenceServerException

    server = ServerProcess(model_store=model_store,
                           config={"enable_grpc": "true", "grpc_inference_address": "127.0.0.1:0",
                                   "grpc_management_address": "127.0.0.1:0"})
    try:
        assert server.register("sleepy.mar", model_name="slow").status_code == 200
        client = tritonclient_grpc.InferenceServerClient(server.urls["grpc_inference"])
        tensor = tritonclient_grpc.InferInput("body", [1], "FP32")
        tensor.set_data_from_numpy(np.array([0.0], dtype=np.float32))
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(server.post, "/predictions/slow", data=b"2.5",
                               headers={"Content-Type": "text/plain"})
            time.sleep(0.3)
            for _ in range(5):  # each call gives up (deadline) while queued behind the busy one
                with pytest.raises(InferenceServerException):
                    client.infer("slow", [tensor], client_timeout=0.3)
            assert busy.result().status_code == 200
        text = server.scrape()
        assert _metric(text, 'tsf_requests_abandoned_total{model_name="slow",'
                             'model_version="1.0",stage="queued"}') == 5, text
        assert server.manage("GET", "/models/slow").json()[0]["queueLength"] == 0
    finally:
        server.stop()

"""Worker processes under faults: loud or long output, a killed front end, signals to the whole
process group, large settings, kill reasons and levels in the log, memory limit, worker cap,
workers that crash while loading."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error, wait_for

HANDLERS = {
    # answers with the OpenMP settings its worker process was started with
    "omp": '''
        import os

        def handle(data, context):
            if data is None:
                return None
            keys = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
            return [{key: os.environ.get(key) for key in keys} for _ in data]
    ''',
    # prints one line of as many bytes as the body says, on stdout and on stderr
    "longline": '''
        import sys

        def handle(data, context):
            if data is None:
                return None
            size = int(data[0].get("body") or 0)
            print("o" * size, flush=True)
            print("e" * size, file=sys.stderr, flush=True)
            return [{"printed": size} for _ in data]
    ''',
    # prints as many MB of short lines as the body says
    "noisy": '''
        import sys

        def handle(data, context):
            if data is None:
                return None
            megabytes = float(data[0].get("body") or 0)
            line = "noise " * 16 + "\\n"
            sys.stdout.write(line * int(megabytes * 2**20 / len(line)))
            sys.stdout.flush()
            return ["done" for _ in data]
    ''',
    # fails in the handler
    "failing": '''
        def handle(data, context):
            if data is None:
                return None
            raise RuntimeError("the handler failed on purpose")
    ''',
    # crashes (SIGSEGV) while loading the first time, or every time while the marker file
    # named by TSF_TEST_CRASH_MARKER says "always"
    "segv": '''
        import ctypes
        import os

        MARKER = os.environ["TSF_TEST_CRASH_MARKER"]


        class CrashingHandler:
            def initialize(self, context):
                first = not os.path.exists(MARKER)
                if first or open(MARKER).read() == "always":
                    open(MARKER, "a").close()
                    ctypes.string_at(0)  # reads address 0
                self.initialized = True

            def handle(self, data, context):
                return [{"pid": os.getpid()} for _ in data]
    ''',
    # writes a frame of an unknown kind on its socket to the front end when the body is "garble"
    "garbling": '''
        import os
        import struct
        import sys
        import time

        def handle(data, context):
            if data is None:
                return None
            body = data[0].get("body") or b""
            if (body.encode() if isinstance(body, str) else bytes(body)) == b"garble":
                fd = int(sys.argv[sys.argv.index("--fd") + 1])
                os.write(fd, struct.pack("!BII", 99, 2, 0) + b"{}")
                time.sleep(30)
            return [{"pid": os.getpid()} for _ in data]
    ''',
    # keeps as many MB as the body says, for good
    "hog": '''
        import os

        KEPT = []

        def handle(data, context):
            if data is None:
                return None
            megabytes = int(data[0].get("body") or 0)
            KEPT.append(b"m" * (megabytes * 2**20))
            return [{"pid": os.getpid()} for _ in data]
    ''',
}


def _archive(tmp_path: Path, name: str, config: str | None = None, **kwargs) -> Path:
    handler = tmp_path / f"{name}_handler.py"
    handler.write_text(textwrap.dedent(HANDLERS[name]))
    config_file = None
    if config is not None:
        config_file = tmp_path / f"{name}-config.yaml"
        config_file.write_text(textwrap.dedent(config))
    store = tmp_path / "store"
    write_archive(ArchiveSpec(model_name=name, handler=str(handler), export_path=str(store),
                              config_file=str(config_file) if config_file else None,
                              force=True, **kwargs))
    return store


def _text(server: ServerProcess, model: str, body: str, **kwargs):
    return server.post(f"/predictions/{model}", data=body.encode(),
                       headers={"Content-Type": "text/plain"}, **kwargs)


def _workers(server: ServerProcess, model: str) -> list[dict]:
    return server.manage("GET", f"/models/{model}").json()[0]["workers"]


def _replacements(server: ServerProcess, model: str, pid: int) -> list[dict]:
    """The model's READY workers other than the one with ``pid``."""
    return [w for w in _workers(server, model) if w["status"] == "READY" and w["pid"] != pid]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- item 3: output --------------------------------------------------------------------------

@pytest.mark.slow
def test_lines_over_64_kib_are_logged_cut_and_the_model_keeps_serving(tmp_path):
    store = _archive(tmp_path, "longline")
    server = ServerProcess(model_store=store, config={"default_response_timeout": 20})
    try:
        assert server.register("longline.mar").status_code == 200
        pid = _workers(server, "longline")[0]["pid"]
        for _ in range(6):  # 1.2 MB per stream in all: far more than the pipes hold
            response = _text(server, "longline", str(200 * 1024), timeout=60)
            assert response.status_code == 200, response.text
        assert _workers(server, "longline")[0]["pid"] == pid  # no restart was needed
        log = server.log()
        assert log.count(f"... [cut {200 * 1024 - 16 * 1024} bytes]") >= 12, log[-3000:]
        assert server.get("/ping").json()["status"] == "Healthy"
    finally:
        server.stop()


@pytest.mark.slow
def test_a_noisy_handler_does_not_stall_and_its_excess_output_is_counted(tmp_path):
    store = _archive(tmp_path, "noisy")
    server = ServerProcess(model_store=store, config={"default_response_timeout": 30})
    try:
        assert server.register("noisy.mar").status_code == 200
        started = time.monotonic()
        for _ in range(3):
            response = _text(server, "noisy", "4", timeout=60)  # 4 MB of lines per request
            assert response.status_code == 200, response.text
        assert time.monotonic() - started < 30
        assert server.get("/ping", timeout=5).status_code == 200
        wait_for(lambda: re.search(r"\d+ lines of output not logged: over 1000 lines/s",
                                    server.log()), 10, "dropped lines were not reported")
    finally:
        server.stop()


# --- item 5: the front end's death and signals to the process group ---------------------------

@pytest.mark.slow
def test_workers_exit_when_the_front_end_is_killed_mid_batch(model_store):
    server = ServerProcess(model_store=model_store)
    try:
        assert server.register("sleepy.mar", initial_workers=2).status_code == 200
        pids = [w["pid"] for w in _workers(server, "sleepy")]
        busy = threading.Thread(target=lambda: _quiet(_text, server, "sleepy", "60"),
                                daemon=True)
        busy.start()
        wait_for(lambda: any(w["status"] == "BUSY" for w in _workers(server, "sleepy")),
                  20, "the worker never got busy")
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        killed = time.monotonic()
        wait_for(lambda: all(_gone(pid) for pid in pids), 10, f"workers {pids} still alive")
        assert time.monotonic() - killed < 2.5
    finally:
        for pid in pids:
            _quiet(os.kill, pid, signal.SIGKILL)
        server.stop()


def _quiet(fn, *args):
    try:
        fn(*args)
    except Exception:
        pass


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_process_group_stops_cleanly_without_restarts(model_store, sig):
    server = ServerProcess(model_store=model_store)
    try:
        assert server.register("fn.tar.gz", initial_workers=2).status_code == 200
        pids = [w["pid"] for w in _workers(server, "fn")]
        os.killpg(server.proc.pid, sig)  # the server runs in its own session
        assert server.proc.wait(30) == 0
        wait_for(lambda: all(_gone(pid) for pid in pids), 10, "workers outlived the server")
        log = server.log()
        assert "restarting" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    finally:
        server.stop()


# --- item 6: settings too large for a command line --------------------------------------------

@pytest.mark.slow
def test_a_manifest_over_256_kib_reaches_the_worker(tmp_path, model_store):
    folder = tmp_path / "store" / "bigmanifest"
    write_archive(ArchiveSpec(model_name="bigmanifest", export_path=str(tmp_path / "store"),
                              handler=str(_handler_file(tmp_path)), archive_format="no-archive"))
    manifest_path = folder / "MAR-INF" / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["description"] = "d" * (300 * 1024)
    manifest_path.write_text(json.dumps(manifest))
    server = ServerProcess(model_store=tmp_path / "store")
    try:
        response = server.register("bigmanifest")
        assert response.status_code == 200, response.text
        answer = _text(server, "bigmanifest", "world")
        assert answer.status_code == 200 and answer.text == "hello world", answer.text
    finally:
        server.stop()


def _handler_file(tmp_path: Path) -> Path:
    path = tmp_path / "fn_handler.py"
    path.write_text(textwrap.dedent('''
        def handle(data, context):
            if data is None:
                return None
            assert len(context.manifest["description"]) == 300 * 1024
            return [f"hello {row.get('body')}" for row in data]
    '''))
    return path


# --- logs: why a worker was killed, handler tracebacks at ERROR --------------------------------

@pytest.mark.slow
def test_the_log_says_why_a_worker_was_killed_and_tracebacks_are_errors(tmp_path, model_store):
    store = _archive(tmp_path, "failing")
    shutil.copy(model_store / "sleepy.mar", store / "sleepy.mar")
    server = ServerProcess(model_store=store, config={"log_format": "json"})
    try:
        assert server.register("failing.mar").status_code == 200
        assert _text(server, "failing", "x").status_code == 500
        assert server.register("sleepy.mar", response_timeout=2).status_code == 200
        assert_error(_text(server, "sleepy", "30"), 504, "WorkerTimeoutException")

        def records():
            return [json.loads(line) for line in server.log().splitlines()
                    if line.startswith("{")]

        wait_for(lambda: any("restarting" in r["message"] for r in records()), 20,
                  "no restart was logged")
        logged = records()
    finally:
        server.stop()
    exits = [r for r in logged if "restarting" in r["message"]]
    assert any("killed by SIGKILL (no answer within response_timeout of 2 s)" in r["message"]
               for r in exits), exits
    traceback = [r for r in logged if r.get("model") == "failing"
                 and ("Traceback" in r["message"] or "on purpose" in r["message"])]
    assert traceback and all(r["level"] == "ERROR" for r in traceback), traceback


@pytest.mark.slow
def test_a_worker_that_sends_an_invalid_frame_is_killed_and_replaced(tmp_path):
    store = _archive(tmp_path, "garbling")
    server = ServerProcess(model_store=store, config={"default_response_timeout": 60})
    try:
        assert server.register("garbling.mar").status_code == 200
        first = _text(server, "garbling", "fine")
        assert first.status_code == 200, first.text
        pid = first.json()["pid"]
        started = time.monotonic()
        assert_error(_text(server, "garbling", "garble"), 503, "WorkerDiedException")
        assert time.monotonic() - started < 20  # not at the handler's 30 s, nor the timeout
        assert _gone(pid)
        wait_for(lambda: _replacements(server, "garbling", pid), 20, "no restart")
        assert _text(server, "garbling", "fine").json()["pid"] != pid
        log = server.log()
        assert "sent something that is not a valid answer" in log, log[-3000:]
        assert "killed by SIGKILL (sent something that is not a valid answer" in log, log[-3000:]
    finally:
        server.stop()


# --- resource limits ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_worker_over_its_memory_limit_is_restarted_after_its_batch(tmp_path):
    store = _archive(tmp_path, "hog", config="workerMemoryLimitMb: 400\n")
    server = ServerProcess(model_store=store)
    try:
        assert server.register("hog.mar").status_code == 200
        first = _text(server, "hog", "0")
        assert first.status_code == 200
        pid = first.json()["pid"]
        assert _text(server, "hog", "500").json()["pid"] == pid  # the batch itself succeeds
        wait_for(lambda: _replacements(server, "hog", pid), 30, "no restart")
        assert _gone(pid)
        assert _text(server, "hog", "0").status_code == 200
        assert re.search(r'tsf_worker_memory_restarts_total\{model_name="hog",'
                         r'model_version="1.0"\} 1.0', server.scrape())
        assert "over the memory limit of 400 MiB" in server.log()
    finally:
        server.stop()


def test_workers_per_model_are_capped(model_store):
    server = ServerProcess(model_store=model_store, config={"max_workers_per_model": 2})
    try:
        assert_error(server.register("fn.tar.gz", initial_workers=3), 400, "BadRequestException",
                     "max_workers_per_model")
        assert server.register("fn.tar.gz", initial_workers=0).status_code == 200
        assert_error(server.manage("PUT", "/models/fn", params={"min_worker": 3}), 400,
                     "BadRequestException", "at most 2")
        assert server.manage("GET", "/models/fn").json()[0]["workers"] == []
    finally:
        server.stop()


def test_workers_spin_openmp_threads_briefly_unless_the_environment_says_otherwise(tmp_path):
    store = _archive(tmp_path, "omp")
    settings = []
    for env in ({}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "50"}):
        server = ServerProcess(model_store=store, config={"number_of_threads_per_worker": 2},
                               env=env)
        try:
            assert server.register("omp.mar").status_code == 200
            settings.append(_text(server, "omp", "").json())
        finally:
            server.stop()
    default, active, spin = settings
    assert default == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "3000"}
    assert active["OMP_WAIT_POLICY"] == "ACTIVE" and active["GOMP_SPINCOUNT"] is None
    assert spin["GOMP_SPINCOUNT"] == "50" and spin["OMP_WAIT_POLICY"] is None


# --- workers that crash while loading -----------------------------------------------------------

@pytest.mark.slow
def test_a_worker_that_crashes_once_while_loading_is_started_again(tmp_path):
    store = _archive(tmp_path, "segv")
    marker = tmp_path / "crashed"
    server = ServerProcess(model_store=store, env={"TSF_TEST_CRASH_MARKER": str(marker)})
    try:
        registered = server.register("segv.mar")
        assert registered.status_code == 200, registered.text
        assert marker.exists()
        assert _text(server, "segv", "x").status_code == 200
        [worker] = _workers(server, "segv")
        assert worker["status"] == "READY"
        log = server.log()
        assert "crashed while loading the model (killed by SIGSEGV); starting it once more" \
            in log, log[-3000:]
        assert "Segmentation fault" in log and "in initialize" in log, log[-3000:]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_worker_that_always_crashes_while_loading_fails_the_call_with_its_traceback(tmp_path):
    store = _archive(tmp_path, "segv")
    marker = tmp_path / "crashed"
    marker.write_text("always")
    server = ServerProcess(model_store=store, env={"TSF_TEST_CRASH_MARKER": str(marker)})
    try:
        failed = server.register("segv.mar")
        assert_error(failed, 500, "ModelLoadException", "killed by SIGSEGV")
        message = failed.json()["message"]
        assert "Segmentation fault" in message and "in initialize" in message, message
        assert "its first start crashed too" in message, message
        assert_error(server.manage("GET", "/models/segv"), 404, "ModelNotFoundException")
        assert server.worker_pids() == []
        assert server.get("/ping").json()["status"] == "Healthy"
    finally:
        server.stop()

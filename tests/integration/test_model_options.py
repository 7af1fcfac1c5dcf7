"""TorchServe model settings on a real server: deviceType/deviceIds, clientTimeoutInMills,
useJobTicket, maxRetryTimeoutInSec and per-model requirements (a local wheel built here)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error

pytestmark = pytest.mark.slow

SLEEPY = '''
    import time

    def handle(data, context):
        if data is None:
            return None
        for row in data:
            time.sleep(float(row.get("body") or 0))
        return [{"device": context.device} for row in data]
'''
CRASHY = '''
    import os

    def handle(data, context):
        if data is None:
            if os.path.exists(context.model_config["marker"]):
                raise RuntimeError("the marker file makes every restart fail")
            return None
        os._exit(3)
'''
DESCRIBER = '''
    import json

    class Described:
        def initialize(self, context):
            self.name = context.manifest["model"]["modelName"]

        def handle(self, data, context):
            return ["ok" for row in data]

        def describe_handle(self):
            return json.dumps({"labels": ["cat", "dog"], "model": self.name})
'''
NEEDS_DEP = '''
    import tsf_tinydep

    def handle(data, context):
        if data is None:
            return None
        return [{"value": tsf_tinydep.VALUE, "from": tsf_tinydep.__file__} for row in data]
'''


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def build_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel ``tsf_tinydep`` (no network, no build backend)."""
    files = {"tsf_tinydep/__init__.py": b"VALUE = 42\n",
             "tsf_tinydep-0.1.dist-info/METADATA":
                 b"Metadata-Version: 2.1\nName: tsf-tinydep\nVersion: 0.1\n",
             "tsf_tinydep-0.1.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: tsf-test\nRoot-Is-Purelib: true\n"
                 b"Tag: py3-none-any\n"}
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tsf_tinydep-0.1.dist-info/RECORD,,")
    path = folder / "tsf_tinydep-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("tsf_tinydep-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    """Once this file exists, the ``crashy`` model fails to load."""
    return tmp_path_factory.mktemp("opt-marker") / "marker"


@pytest.fixture(scope="module")
def store(tmp_path_factory, marker) -> Path:
    src = tmp_path_factory.mktemp("opt-src")
    store = tmp_path_factory.mktemp("opt-store")

    def archive(name: str, handler: str, config: str | None = None, **kwargs) -> None:
        if config is not None:
            kwargs["config_file"] = str(_write(src, f"{name}-config.yaml", config))
        write_archive(ArchiveSpec(model_name=name, export_path=str(store),
                                  handler=str(_write(src, f"{name}.py", handler)), **kwargs))

    archive("cpu", SLEEPY, "deviceType: cpu\n")
    archive("gpu99", SLEEPY, "deviceIds: [99]\n")
    archive("tpu", SLEEPY, "deviceType: tpu\n")
    archive("timeout", SLEEPY, "clientTimeoutInMills: 500\nbatchSize: 1\n")
    archive("ticket", SLEEPY, "useJobTicket: true\nbatchSize: 1\n")
    archive("queued", SLEEPY, "batchSize: 1\n")
    archive("describer", DESCRIBER)
    archive("crashy", CRASHY, f"maxRetryTimeoutInSec: 1\nmarker: {marker}\n")
    wheel = build_wheel(src)
    requirements = _write(src, "requirements.txt", f"./{wheel.name}\n")
    archive("needsdep", NEEDS_DEP, requirements_file=str(requirements), extra_files=str(wheel))
    return store


@pytest.fixture(scope="module")
def server(store):
    server = ServerProcess(model_store=store, config={
        "install_py_dep_per_model": "true", "worker_restart_backoff_max": "0.5",
        "enable_grpc": "true", "grpc_inference_address": "127.0.0.1:0",
        "grpc_management_address": "127.0.0.1:0"})
    try:
        yield server
    finally:
        server.stop()


def _models(server: ServerProcess) -> list[str]:
    return [m["modelName"] for m in server.manage("GET", "/models").json()["models"]]


def test_device_type_cpu_is_honoured_and_unseen_gpu_ids_fail_the_load(server):
    assert server.register("cpu.mar").status_code == 200
    assert server.post("/predictions/cpu", data="0").json() == {"device": "cpu"}
    response = server.register("gpu99.mar")
    assert_error(response, 500, "ModelLoadException")
    assert "[99]" in response.json()["message"] and "sees" in response.json()["message"]
    response = server.register("tpu.mar")
    assert_error(response, 400, "BadRequestException")
    assert "deviceType" in response.json()["message"]
    assert "gpu99" not in _models(server) and "tpu" not in _models(server)


def _busy_then(server: ServerProcess, model: str) -> tuple:
    """Send a 3 s request, then (once it runs) a second; the second's answer and time."""
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(server.post, f"/predictions/{model}", data="3")
        deadline = time.monotonic() + 30
        while not any(w["status"] == "BUSY" for w in
                      server.manage("GET", f"/models/{model}").json()[0]["workers"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        second = server.post(f"/predictions/{model}", data="0")
        elapsed = time.monotonic() - started
        assert first.result().status_code == 200
    return second, elapsed


def test_client_timeout_drops_a_queued_request(server):
    assert server.register("timeout.mar").status_code == 200
    second, elapsed = _busy_then(server, "timeout")
    assert_error(second, 503, "ServiceUnavailableException")
    assert "clientTimeoutInMills" in second.json()["message"]
    assert 0.4 < elapsed < 2.5
    assert server.post("/predictions/timeout", data="0").status_code == 200


def test_job_ticket_refuses_at_once_when_no_worker_is_free(server):
    assert server.register("ticket.mar").status_code == 200
    second, elapsed = _busy_then(server, "ticket")
    assert_error(second, 503, "ServiceUnavailableException")
    assert "useJobTicket" in second.json()["message"]
    assert elapsed < 1.0
    assert server.post("/predictions/ticket", data="0").status_code == 200
    # without the ticket the same request queues and is answered
    assert server.register("queued.mar").status_code == 200
    second, elapsed = _busy_then(server, "queued")
    assert second.status_code == 200 and elapsed > 1.0


def test_max_retry_timeout_stops_restarting_a_failing_worker(server, marker):
    assert server.register("crashy.mar").status_code == 200
    marker.write_text("fail from now on")
    assert server.post("/predictions/crashy", data="x").status_code >= 500
    deadline = time.monotonic() + 60
    while "gave up restarting workers of crashy" not in server.log():
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.2)
    restarts = server.log().count("restarting a worker of crashy failed")
    time.sleep(2.0)
    assert server.log().count("restarting a worker of crashy failed") == restarts
    assert server.manage("GET", "/models/crashy").json()[0]["workers"] == []


def test_per_model_requirements_are_installed_once_and_cached(server):
    assert server.register("needsdep.mar").status_code == 200, server.log()[-2000:]
    answer = server.post("/predictions/needsdep", data="0").json()
    assert answer["value"] == 42
    envs = server.workdir / "workspace" / "pyenvs"
    assert Path(answer["from"]).is_relative_to(envs)
    assert server.register("needsdep.mar", model_name="again").status_code == 200
    assert server.post("/predictions/again", data="0").json()["from"] == answer["from"]
    assert [p.name for p in envs.iterdir() if not p.name.startswith(".")] == \
        [Path(answer["from"]).relative_to(envs).parts[0]]
    assert server.log().count("installed the requirements of needsdep") == 1


def test_customized_describe_calls_the_handlers_describe_hook(server):
    assert server.register("describer.mar").status_code == 200
    [plain] = server.manage("GET", "/models/describer").json()
    assert "customizedMetadata" not in plain
    [described] = server.manage("GET", "/models/describer",
                                params={"customized": "true"}).json()
    assert json.loads(described["customizedMetadata"]) == {"labels": ["cat", "dog"],
                                                           "model": "describer"}
    assert described["modelName"] == "describer" and described["workers"]
    # a handler without the hook: the plain description
    if "cpu" not in _models(server):
        assert server.register("cpu.mar").status_code == 200
    [cpu] = server.manage("GET", "/models/cpu", params={"customized": "true"}).json()
    assert "customizedMetadata" not in cpu and cpu["modelName"] == "cpu"
    assert_error(server.manage("GET", "/models/absent", params={"customized": "true"}), 404)


# The client runs in a child process: tsf's stubs and TorchServe's own (test_grpc_torchserve.py)
# declare the same protobuf package, and one process's descriptor pool takes only one of them.
GRPC_DESCRIBE_CLIENT = """
import json, sys
import grpc
from tsf.grpc_api.stubs import load
modules = load()
pb = modules["tsf_torchserve_management_pb2"]
stubs = modules["tsf_torchserve_management_pb2_grpc"]
with grpc.insecure_channel(sys.argv[1]) as channel:
    stub = stubs.ManagementAPIsServiceStub(channel)
    answer = stub.DescribeModel(pb.DescribeModelRequest(model_name="describer", customized=True),
                                timeout=60)
    plain = stub.DescribeModel(pb.DescribeModelRequest(model_name="describer"), timeout=60)
print(json.dumps([answer.msg, plain.msg]))
"""


def test_customized_describe_over_grpc(server):
    pytest.importorskip("grpc")
    if "describer" not in _models(server):
        assert server.register("describer.mar").status_code == 200
    out = subprocess.run([sys.executable, "-c", GRPC_DESCRIBE_CLIENT,
                          server.urls["grpc_management"]], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    answer, plain = json.loads(out.stdout)
    [described] = json.loads(answer)
    assert json.loads(described["customizedMetadata"])["labels"] == ["cat", "dog"]
    assert "customizedMetadata" not in json.loads(plain)[0]

"""The profiler on a real server: ``PUT /models/{m}/profile?batches=N`` records the next N
batches of each worker with torch's profiler and cProfile; the Chrome trace (with the stages
as ranges), the ``.prof`` and a summary are listed and downloaded from the management API;
TorchServe's ``enable_pytorch_profiler`` key records the first batches after loading."""

from __future__ import annotations

import json
import pstats
import textwrap
import time

import pytest
import torch

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error

pytestmark = pytest.mark.slow

MLP = '''
    import torch

    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                              torch.nn.Linear(16, 2))

        def forward(self, x):
            return self.layers(x)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    src, store = tmp_path_factory.mktemp("prof-src"), tmp_path_factory.mktemp("prof-store")
    (src / "mlp.py").write_text(textwrap.dedent(MLP))
    namespace: dict = {}
    exec((src / "mlp.py").read_text(), namespace)
    torch.save(namespace["Mlp"]().state_dict(), src / "mlp.pth")
    (src / "profiled.yaml").write_text("enable_pytorch_profiler: true\nprofiler_batches: 2\n")
    common = dict(serialized_file=str(src / "mlp.pth"), model_file=str(src / "mlp.py"),
                  export_path=str(store))
    write_archive(ArchiveSpec(model_name="mlp", **common))
    write_archive(ArchiveSpec(model_name="startup", config_file=str(src / "profiled.yaml"),
                              **common))
    server = ServerProcess(model_store=store, models=["mlp=mlp.mar", "startup=startup.mar"])
    deadline = time.monotonic() + 120
    while not all(_ready(server, m) for m in ("mlp", "startup")):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    yield server
    server.stop()


def _ready(server: ServerProcess, model: str) -> bool:
    described = server.manage("GET", f"/models/{model}")
    return described.status_code == 200 and any(
        w["status"] == "READY" for w in described.json()[0]["workers"])


def _complete_run(server: ServerProcess, model: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        listing = server.manage("GET", f"/models/{model}/profile")
        assert listing.status_code == 200, listing.text
        runs = listing.json()["runs"]
        if runs and runs[0]["complete"]:
            return runs[0]
        assert time.monotonic() < deadline, (listing.text, server.log())
        time.sleep(0.2)


def test_the_next_batches_are_profiled_and_served_as_trace_and_prof(server, tmp_path):
    assert server.manage("GET", "/models/mlp/profile").json()["runs"] == []
    r = server.manage("PUT", "/models/mlp/profile", params={"batches": "3"})
    assert r.status_code == 202, r.text
    assert "next 3 batches" in r.json()["status"]
    assert server.manage("GET", "/models/mlp/profile").json()["runs"][0]["complete"] is False
    for i in range(3):
        assert server.post("/predictions/mlp", json=[[0.1 * i] * 8]).status_code == 200
    run = _complete_run(server, "mlp")
    files = run["files"]
    worker = run["workers"][0]
    assert set(files) == {f"{worker}.trace.json", f"{worker}.stages.prof",
                          f"{worker}.summary.json"}
    url = files[f"{worker}.trace.json"]
    assert url.endswith(f"/models/mlp/1.0/profile/{run['run']}/{worker}.trace.json")
    trace = server.manage("GET", url[url.index("/models/"):])
    assert trace.status_code == 200 and trace.headers["Content-Type"] == "application/json"
    events = trace.json()["traceEvents"]
    names = {e.get("name") for e in events}
    assert {"preprocess", "inference", "postprocess"} <= names
    assert any(str(n).startswith("aten::linear") for n in names)
    prof = server.manage("GET", f"/models/mlp/1.0/profile/{run['run']}/{worker}.stages.prof")
    assert prof.status_code == 200
    (tmp_path / "stages.prof").write_bytes(prof.content)
    stats = pstats.Stats(str(tmp_path / "stages.prof"))  # what snakeviz reads
    assert any("tsf_inference" in key[2] for key in stats.stats)
    summary = server.manage(
        "GET", f"/models/mlp/1.0/profile/{run['run']}/{worker}.summary.json").json()
    assert summary["batches"] == 3 and summary["requests"] == 3
    assert set(summary["stage_seconds"]) == {"preprocess", "inference", "postprocess"}
    assert "aten::" in summary["operators"]


def test_torchserve_profiler_key_records_the_first_batches(server):
    for _ in range(2):
        assert server.post("/predictions/startup", json=[[0.5] * 8]).status_code == 200
    run = _complete_run(server, "startup")
    assert run["run"].startswith("startup-")
    summary_name = next(f for f in run["files"] if f.endswith(".summary.json"))
    summary = server.manage(
        "GET", f"/models/startup/1.0/profile/{run['run']}/{summary_name}").json()
    assert summary["batches"] == 2


def test_bad_profile_requests_answer_clear_errors(server):
    assert_error(server.manage("PUT", "/models/mlp/profile", params={"batches": "0"}), 400,
                 "BadRequestException", "batches")
    assert_error(server.manage("PUT", "/models/mlp/profile", params={"batches": "x"}), 400,
                 "BadRequestException", "batches")
    assert_error(server.manage("PUT", "/models/nope/profile"), 404, "ModelNotFoundException",
                 "nope")
    assert_error(server.manage("GET", "/models/mlp/1.0/profile/..%2F..%2Fetc/passwd"), 400,
                 "BadRequestException", "profile file")
    assert_error(server.manage("GET", "/models/mlp/1.0/profile/run-1/x.trace.json"), 404,
                 "ResourceNotFoundException", "no profile file")
    assert_error(server.manage("GET", "/models/mlp/9.9/profile"), 404,
                 "ModelVersionNotFoundException", "9.9")
    assert server.post("/predictions/mlp", json=[[0.0] * 8]).status_code == 200
    assert json.loads(server.manage("GET", "/models/mlp/profile").text)["modelName"] == "mlp"

"""Config snapshots: written after each management change, restored when the server starts again
with the same --ts-config (versions, workers, default version, traffic split), kept to the last
N, skipped with --ncs, and never broken by a kill -9 between two management calls."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from tsf.config.properties import read_properties
from tsf.testing import ServerProcess

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, keep: int = 4) -> tuple[Path, Path]:
    snapshots = tmp_path / "snapshots"
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:0\n"
                      "management_address=http://127.0.0.1:0\n"
                      "metrics_address=http://127.0.0.1:0\n"
                      f"snapshot_dir={snapshots}\nsnapshot_keep={keep}\n")
    return config, snapshots


def start(config: Path, model_store: Path, *extra: str) -> ServerProcess:
    server = ServerProcess(args=["--ts-config", str(config), *extra], model_store=model_store)
    deadline = time.monotonic() + 120
    while server.get("/ping").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    return server


def snapshot_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*-snapshot.cfg")) if folder.is_dir() else []


def latest_document(folder: Path) -> dict:
    return json.loads(read_properties(snapshot_files(folder)[-1])["model_snapshot"])


def models(server: ServerProcess) -> set[str]:
    return {m["modelName"] for m in server.manage("GET", "/models").json()["models"]}


def test_restart_with_the_same_config_restores_the_registered_state(model_store, tmp_path):
    config, folder = write_config(tmp_path, keep=4)
    server = start(config, model_store)
    try:
        assert server.register("mlp.mar", model_name="mlp", batch_size=2).status_code == 200
        assert server.register("mlp2.mar", model_name="mlp").status_code == 200
        assert server.manage("PUT", "/models/mlp/2.0/set-default").status_code == 200
        assert server.manage("PUT", "/models/mlp/1.0", params={
            "min_worker": 1, "max_worker": 2, "synchronous": "true"}).status_code == 200
        assert server.manage("PUT", "/models/mlp/traffic",
                             json={"1.0": 30, "2.0": 70}).status_code == 200
        # set-default and traffic are written just after their answer
        deadline = time.monotonic() + 10
        while not latest_document(folder).get("trafficSplits") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    files = snapshot_files(folder)
    assert len(files) == 4, files  # five changes, the last four kept
    document = latest_document(folder)
    assert document["models"]["mlp"]["2.0"]["defaultVersion"] is True
    assert document["models"]["mlp"]["1.0"]["marName"] == "mlp.mar"

    server = start(config, model_store)
    try:
        described = {d["modelVersion"]: d for d in server.manage("GET", "/models/mlp/all").json()}
        assert set(described) == {"1.0", "2.0"}
        assert (described["1.0"]["minWorkers"], described["1.0"]["maxWorkers"],
                described["1.0"]["batchSize"]) == (1, 2, 2)
        traffic = server.manage("GET", "/models/mlp/traffic").json()
        assert traffic["defaultVersion"] == "2.0"
        assert traffic["weights"] == {"1.0": 30.0, "2.0": 70.0}
        assert server.post("/predictions/mlp/1.0", json=[0.1, 0.2, 0.3, 0.4]).status_code == 200
        assert "restoring the models of config snapshot" in server.log()
        written = len(snapshot_files(folder))
    finally:
        server.stop()
    assert written == 4 and snapshot_files(folder)[-1] == files[-1]  # restoring writes none

    server = start(config, model_store, "--ncs")  # neither restore nor write
    try:
        assert models(server) == set()
        assert server.register("mlp.mar", model_name="other").status_code == 200
    finally:
        server.stop()
    assert snapshot_files(folder) == files

    other = tmp_path / "other.properties"  # another config file: its own models, no restore
    other.write_text(config.read_text())
    server = start(other, model_store)
    try:
        assert models(server) == set()
        assert "was written for another config file" in server.log()
    finally:
        server.stop()


def test_kill_9_between_two_management_calls_leaves_one_state_or_the_other(model_store,
                                                                            tmp_path):
    config, folder = write_config(tmp_path, keep=10)
    server = start(config, model_store)
    assert server.register("mlp.mar", model_name="first").status_code == 200
    seen = set()
    for delay in (0.0, 0.01, 0.05):
        call = threading.Thread(target=_quietly, args=(server, {
            "url": "mlp.mar", "model_name": "second", "initial_workers": 0,
            "synchronous": "true"}), daemon=True)
        call.start()
        time.sleep(delay)
        server.proc.kill()  # kill -9: no drain, no last snapshot
        server.proc.wait(10)
        server.stop()
        call.join(10)
        for path in snapshot_files(folder):  # every file whole and readable
            json.loads(read_properties(path)["model_snapshot"])
        server = start(config, model_store)
        restored = models(server)
        assert restored in ({"first"}, {"first", "second"}), restored
        seen.add(frozenset(restored))
        if "second" in restored:
            assert server.manage("DELETE", "/models/second").status_code == 200
    server.stop()
    assert seen  # which state a kill leaves depends on timing; both are correct


def _quietly(server: ServerProcess, params: dict) -> None:
    try:
        server.manage("POST", "/models", params=params, timeout=20)
    except requests.RequestException:
        pass  # the server was killed under the call

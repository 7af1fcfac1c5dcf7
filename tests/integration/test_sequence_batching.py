"""Stateful sequence batching: TorchServe's ``examples/stateful/sequence_batching`` handler,
unchanged, through tsf's ``ts`` package; interleaved sequences from several clients keep their
running state; sequences are pinned, ordered, limited, echoed, ended and expired."""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error

pytestmark = pytest.mark.slow
pytest.importorskip("lru")  # lru-dict: the example's requirement

EXAMPLE = Path(__file__).with_name("torchserve_stateful")

# the model-config.yaml of TorchServe's own test of the example
STATEFUL_YAML = """
minWorkers: 2
maxWorkers: 2
batchSize: 4
maxNumSequence: 4
sequenceMaxIdleMSec: 5000
maxSequenceJobQueueSize: 10
sequenceBatching: true

handler:
  cache:
    capacity: 4
"""

# tsf-native: reports its worker, the sequence id and a per-sequence count it keeps
COUNTER_HANDLER = '''
    import os

    COUNTS = {}

    def handle(data, context):
        if data is None:
            return None
        out = []
        for i, row in enumerate(data):
            sequence = context.get_sequence_id(i)
            COUNTS[sequence] = COUNTS.get(sequence, 0) + 1
            if row.get("body") in (b"end", "end"):
                context.set_response_header(i, context.header_key_sequence_end, sequence)
            out.append({"pid": os.getpid(), "sequence": sequence, "count": COUNTS[sequence],
                        "start": context.get_request_header(i, "ts_request_sequence_start"),
                        "batch": len(data)})
        return out
'''
COUNTER_YAML = """
minWorkers: 2
maxWorkers: 2
batchSize: 2
maxBatchDelay: 20
maxNumSequence: 2
sequenceMaxIdleMSec: 600
maxSequenceJobQueueSize: 3
sequenceBatching: true
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    import torch

    src, store = tmp_path_factory.mktemp("stateful-src"), tmp_path_factory.mktemp("store")
    spec = importlib.util.spec_from_file_location("stateful_model", EXAMPLE / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.Net().state_dict(), src / "model_cnn.pt")  # not shipped by the example
    (src / "model-config.yaml").write_text(STATEFUL_YAML)
    (src / "requirements.txt").write_text("lru-dict\n")
    # the example's Readme: torch-model-archiver ... --handler stateful_handler.py -r ...
    write_archive(ArchiveSpec(
        model_name="stateful", version="1.0", model_file=str(EXAMPLE / "model.py"),
        serialized_file=str(src / "model_cnn.pt"),
        handler=str(EXAMPLE / "stateful_handler.py"),
        requirements_file=str(src / "requirements.txt"),
        config_file=str(src / "model-config.yaml"), archive_format="no-archive",
        export_path=str(store)))
    (src / "counter.py").write_text(textwrap.dedent(COUNTER_HANDLER))
    (src / "counter.yaml").write_text(COUNTER_YAML)
    write_archive(ArchiveSpec(model_name="counter", handler=str(src / "counter.py"),
                              config_file=str(src / "counter.yaml"), export_path=str(store)))
    return store


@pytest.fixture(scope="module")
def server(store):
    server = ServerProcess(model_store=store, args=[
        "--start", "--ncs", "--disable-token-auth", "--inference-address", "http://127.0.0.1:0",
        "--management-address", "http://127.0.0.1:0", "--metrics-address",
        "http://127.0.0.1:0"])
    try:
        yield server
    finally:
        server.stop()


def test_torchserve_stateful_example_runs_unchanged(server, store):
    # TorchServe's test: register the unpacked example with 2 workers, then two clients
    response = server.manage("POST", "/models", params={
        "model_name": "stateful", "url": str(store / "stateful"), "initial_workers": 2,
        "synchronous": "true"})
    assert response.status_code == 200, server.log()[-3000:]
    described = server.manage("GET", "/models/stateful").json()[0]
    assert described["stateful"] is True and described["maxNumSequence"] == 4

    def client(sequence: str, bodies: list[int]) -> str:
        answers = []
        for body in bodies:
            answer = server.post("/predictions/stateful", data=str(body).encode(),
                                 headers={"ts_request_sequence_id": sequence})
            assert answer.status_code == 200, answer.text
            assert answer.headers["ts_request_sequence_id"] == sequence  # echoed
            answers.append(answer.text)
        return " ".join(answers)

    with ThreadPoolExecutor(4) as pool:  # TorchServe's two sequences, and two more at once
        runs = {
            "seq_0": pool.submit(client, "seq_0", [1, 3, 5, 7, 9]),
            "seq_1": pool.submit(client, "seq_1", [2, 4, 6, 8, 10]),
            "seq_2": pool.submit(client, "seq_2", [10, 10, 10, 10, 10]),
            "seq_3": pool.submit(client, "seq_3", [5, -1, 5, -1, 5]),
        }
        results = {name: run.result(timeout=120) for name, run in runs.items()}
    assert results == {"seq_0": "1 4 9 16 25", "seq_1": "2 6 12 20 30",
                       "seq_2": "10 20 30 40 50", "seq_3": "5 4 9 8 13"}
    assert server.manage("DELETE", "/models/stateful").status_code == 200


def post(server: ServerProcess, body: str, sequence: str | None = None, **headers: str):
    if sequence is not None:
        headers["ts_request_sequence_id"] = sequence
    return server.post("/predictions/counter", data=body.encode(), headers=headers)


def test_sequences_are_pinned_ordered_limited_and_expire(server):
    assert server.register("counter.mar", initial_workers=2).status_code == 200
    try:
        first = post(server, "x")  # no id: a new sequence, its id sent back
        assert first.status_code == 200
        opened = first.headers["ts_request_sequence_id"]
        assert opened.startswith("ts-seq-") and first.json()["start"] == "true"
        assert first.json()["sequence"] == opened

        # interleaved clients: each sequence counts 1..n on one worker, in order
        def client(sequence: str) -> list[dict]:
            return [post(server, "x", sequence).json() for _ in range(6)]

        with ThreadPoolExecutor(2) as pool:
            a, b = pool.submit(client, opened), pool.submit(client, "other")
            a, b = a.result(60), b.result(60)
        assert [r["count"] for r in a] == [2, 3, 4, 5, 6, 7]
        assert [r["count"] for r in b] == [1, 2, 3, 4, 5, 6]
        assert len({r["pid"] for r in a}) == 1 and len({r["pid"] for r in b}) == 1
        # two open sequences (maxNumSequence 2): a third is refused
        assert_error(post(server, "x", "third"), 503, text="maxNumSequence")
        # the handler ends one: its slot is free at once
        ended = post(server, "end", "other")
        assert ended.headers["ts_request_sequence_end"] == "other"
        assert post(server, "x", "third").json()["count"] == 1
        # idle sequences expire (sequenceMaxIdleMSec 600) and free their slots
        time.sleep(1.5)
        assert server.manage("GET", "/models/counter").json()[0]["openSequences"] == 0
        fresh = [post(server, "x", f"s{i}") for i in range(2)]
        assert [r.status_code for r in fresh] == [200, 200]
        # the client ends a sequence with ts_request_sequence_end: true
        assert post(server, "x", "s0", ts_request_sequence_end="true").status_code == 200
        assert post(server, "x", "s2").status_code == 200
    finally:
        server.manage("DELETE", "/models/counter")


def test_a_sequences_queue_is_bounded(server):
    assert server.register("counter.mar", model_name="bounded", initial_workers=1,
                           batch_size=1).status_code == 200
    try:
        # one sequence: at most one request runs, three more may wait (maxSequenceJobQueueSize)
        statuses, lock = [], threading.Lock()

        def send() -> None:
            answer = server.post("/predictions/bounded", data=b"x",
                                 headers={"ts_request_sequence_id": "busy"})
            with lock:
                statuses.append(answer.status_code)

        threads = [threading.Thread(target=send) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses.count(200) >= 4 and set(statuses) <= {200, 503}, statuses
    finally:
        server.manage("DELETE", "/models/bounded")

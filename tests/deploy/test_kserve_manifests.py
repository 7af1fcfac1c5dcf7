"""deploy/kserve/ checked offline: the ClusterServingRuntime and the InferenceService examples
against strict schemas written from KServe's CRDs (an unknown or misspelt field fails), their
containers against the Kubernetes API schema (kubernetes-validate, strict), and the runtime's
command line, variables, ports and probes against tsf's own parser and settings."""

from __future__ import annotations

import copy
import json
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import yaml

from tsf.cli import build_parser
from tsf.config.settings import Address, ServerConfig

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (requirements-test.txt)")

KSERVE = Path(__file__).resolve().parents[2] / "deploy" / "kserve"
KUBE_VERSION = "1.30"
KSERVE_ONLY_MODEL_KEYS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion",
                          "storageUri", "storage"}


def runtime() -> dict:
    return yaml.safe_load((KSERVE / "clusterservingruntime.yaml").read_text())


def inference_services() -> list[dict]:
    return list(yaml.safe_load_all((KSERVE / "inferenceservice.yaml").read_text()))


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json.loads((KSERVE / "schemas" / f"{name}.schema.json").read_text()))


def validate_container(container: dict) -> None:
    """A core v1 Container, strictly, as the only container of a Pod."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
           "spec": {"containers": [container]}}
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)


def validate_runtime(doc: dict) -> None:
    schema("clusterservingruntime").validate(doc)
    for container in doc["spec"]["containers"]:
        validate_container(container)


def validate_inference_service(doc: dict) -> None:
    schema("inferenceservice").validate(doc)
    model = doc["spec"]["predictor"]["model"]
    container = {k: v for k, v in model.items() if k not in KSERVE_ONLY_MODEL_KEYS}
    validate_container({"name": "kserve-container", **container})


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_runtime_and_examples_are_strictly_valid():
    validate_runtime(runtime())
    services = inference_services()
    assert [s["metadata"]["name"] for s in services] == ["mnist", "mnist-grpc"]
    for doc in services:
        validate_inference_service(doc)
        assert doc["spec"]["predictor"]["model"]["runtime"] == runtime()["metadata"]["name"]


def _rename(doc: dict, path: list, new_key: str) -> dict:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[new_key] = parent.pop(path[-1])
    return doc


@pytest.mark.parametrize("path, misspelt", [
    (["spec", "supportedModelFormats"], "supportedModelFormat"),
    (["spec", "supportedModelFormats", 0, "autoSelect"], "autoselect"),
    (["spec", "protocolVersions"], "protocolVersion"),
    (["metadata", "name"], "nmae"),
])
def test_a_misspelt_runtime_field_fails(path, misspelt):
    with pytest.raises(jsonschema.ValidationError):
        validate_runtime(_rename(runtime(), path, misspelt))


@pytest.mark.parametrize("path, misspelt", [
    (["spec", "containers", 0, "readinessProbe"], "readinesProbe"),
    (["spec", "containers", 0, "env", 0, "value"], "valeu"),
    (["spec", "containers", 0, "ports", 0, "containerPort"], "port"),
])
def test_a_misspelt_container_field_fails(path, misspelt):
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_runtime(_rename(runtime(), path, misspelt))


@pytest.mark.parametrize("index, path, misspelt", [
    (0, ["spec", "predictor", "model", "storageUri"], "storageURI"),
    (0, ["spec", "predictor", "model", "modelFormat", "name"], "nme"),
    (0, ["spec", "predictor"], "predicter"),
    (1, ["spec", "predictor", "model", "ports", 0, "containerPort"], "containerport"),
])
def test_a_misspelt_inference_service_field_fails(index, path, misspelt):
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate_inference_service(_rename(inference_services()[index], path, misspelt))


def test_a_wrong_protocol_version_fails():
    doc = copy.deepcopy(inference_services()[0])
    doc["spec"]["predictor"]["model"]["protocolVersion"] = "v3"
    with pytest.raises(jsonschema.ValidationError):
        validate_inference_service(doc)


def test_runtime_starts_tsf_on_kserves_layout_and_ports():
    spec = runtime()["spec"]
    assert set(spec["protocolVersions"]) == {"v1", "v2", "grpc-v2"}
    container = spec["containers"][0]
    assert container["name"] == "kserve-container" and container["command"] == ["tsf", "serve"]
    args = build_parser().parse_args(container["command"][1:] + container["args"])
    assert args.start and args.model_store == "/mnt/models/model-store"
    assert args.config_file == "/mnt/models/config/config.properties"
    env = env_of(container)
    known = {f"TSF_{f.name.upper()}" for f in fields(ServerConfig)}
    assert {k for k in env if k.startswith("TSF_")} <= known
    assert env["TS_SERVICE_ENVELOPE"] == "{{.Labels.serviceEnvelope}}"
    http = Address.parse(env["TSF_INFERENCE_ADDRESS"])
    assert http.host == "0.0.0.0" and http.port == 8080
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert env["TSF_ENABLE_GRPC"] == "true" and env["TSF_GRPC_INFERENCE_PORT"] == "8081"
    assert env["TSF_GRPC_INFERENCE_ADDRESS"] == "0.0.0.0:8081"
    assert Address.parse(env["TSF_METRICS_ADDRESS"]).port == \
        int(spec["annotations"]["prometheus.kserve.io/port"])
    grpc_ports = inference_services()[1]["spec"]["predictor"]["model"]["ports"]
    assert grpc_ports == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]

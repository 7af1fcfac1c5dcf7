"""OpenAPI 3 descriptions of the inference and management APIs (``OPTIONS /``,
``GET /api-description``)."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .api_handler import ApiHandler

_ERROR = {
    "description": "Error",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["code", "type", "message"],
        "properties": {"code": {"type": "integer"}, "type": {"type": "string"},
                       "message": {"type": "string"}}}}},
}
_STATUS = {"description": "OK", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"status": {"type": "string"}}}}}}


def _param(name: str, where: str = "query", kind: str = "string", required: bool = False,
           description: str = "") -> dict:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": {"type": kind}, "description": description}


def _op(summary: str, params: list[dict] | None = None, ok: dict | None = None,
        body: bool = False) -> dict:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": {"200": ok or _STATUS, "default": _ERROR}}
    if body:
        op["requestBody"] = {"content": {"application/json": {}, "application/octet-stream": {},
                                         "multipart/form-data": {}}}
    return op


def _doc(title: str, paths: dict) -> dict:
    return {"openapi": "3.0.1", "info": {"title": title, "version": __version__}, "paths": paths}


MODEL = _param("model_name", "path", description="registered model name")
VERSION = _param("model_version", "path", description="model version")
WORKFLOW = _param("workflow_name", "path", description="registered workflow name")


def inference_spec() -> dict:
    predict = _op("Predict with a model (default version, or the one given)", body=True,
                  ok={"description": "Model output"})
    explain = _op("Explain a prediction", body=True, ok={"description": "Explanation"})
    return _doc("tsf Inference API", {
        "/": {"options": _op("This OpenAPI description")},
        "/api-description": {"get": _op("This OpenAPI description")},
        "/ping": {"get": _op("Health: 200 when every model has its minimum of live workers")},
        "/predictions/{model_name}": {"post": dict(predict, parameters=[MODEL])},
        "/predictions/{model_name}/{model_version}": {
            "post": dict(predict, parameters=[MODEL, VERSION])},
        "/explanations/{model_name}": {"post": dict(explain, parameters=[MODEL])},
        "/explanations/{model_name}/{model_version}": {
            "post": dict(explain, parameters=[MODEL, VERSION])},
        "/v1/models/{model_name}": {"get": dict(_op("KServe v1 readiness"), parameters=[MODEL])},
        "/v1/models/{model_name}:predict": {"post": dict(
            _op("KServe v1 predict: {instances: [...]}", body=True,
                ok={"description": "{predictions: [...]}"}), parameters=[MODEL])},
        "/v1/models/{model_name}:explain": {"post": dict(
            _op("KServe v1 explain: {instances: [...]}", body=True,
                ok={"description": "{explanations: [...]}"}), parameters=[MODEL])},
        "/feedback/{model_name}": {"post": dict(
            _op("Ground truth for captured predictions: {id, label, groups} or a list",
                body=True, ok={"description": "{accepted: n}"}), parameters=[MODEL])},
        "/wfpredict/{workflow_name}": {"post": dict(
            _op("Run a workflow: the answer of its leaf node", body=True,
                ok={"description": "Workflow output"}), parameters=[WORKFLOW])},
        **_oip_paths(),
        **_job_paths(),
    })


def _job_paths() -> dict:
    """The job API (docs/jobs.md)."""
    job_id = _param("job_id", "path", description="the id a submit answered")
    name = _param("name", "path", description="POST: a model or workflow name; GET, DELETE: "
                  "a job id")
    accepted = {"description": "Accepted: the job, with Location: /jobs/{id}"}
    submit = dict(_op("Submit a job: the body, content types and headers of /predictions "
                      "(Idempotency-Key, Callback-Url headers)", body=True),
                  responses={"202": accepted, "default": _ERROR})
    callback = _param("callback_url", description="POST the result here when the job ends")
    return {
        "/jobs": {"get": _op("List jobs, oldest first", [
            _param("model"), _param("status"), _param("limit", kind="integer"),
            _param("page_token")], ok={"description": "{jobs: [...], nextPageToken}"})},
        # one template: a job id for GET and DELETE, a model (or workflow) name for POST
        "/jobs/{name}": {
            "post": dict(submit, parameters=[name, callback]),
            "get": _op("A job's status and times", [name], ok={"description": "The job"}),
            "delete": _op("Cancel a job", [name], ok={"description": "The job, cancelled"})},
        "/jobs/{name}/{model_version}": {
            "post": dict(submit, parameters=[name, VERSION, callback])},
        "/jobs/{job_id}/result": {"get": _op(
            "A finished job's answer (404 until done, 409 if it failed, 410 once expired)",
            [job_id], ok={"description": "The stored answer"})},
    }


def _oip_paths() -> dict:
    """KServe v2 / Open Inference Protocol routes, with and without a version."""
    infer = _op("OIP inference: JSON tensors, or JSON then binary tensors "
                "(Inference-Header-Content-Length)", body=True,
                ok={"description": "{model_name, model_version, outputs: [...]}"})
    paths: dict[str, Any] = {
        "/v2": {"get": _op("OIP server metadata")},
        "/v2/health/live": {"get": _op("OIP liveness (no token needed)")},
        "/v2/health/ready": {"get": _op("OIP readiness: 503 until every model is ready "
                                        "(no token needed)")},
    }
    for base, params in (("/v2/models/{model_name}", [MODEL]),
                         ("/v2/models/{model_name}/versions/{model_version}", [MODEL, VERSION])):
        paths[base] = {"get": dict(_op("OIP model metadata"), parameters=params)}
        paths[base + "/ready"] = {"get": dict(_op("OIP model readiness"), parameters=params)}
        paths[base + "/infer"] = {"post": dict(infer, parameters=params)}
    return paths


def management_spec() -> dict:
    register_params = [_param("url", required=True, description="archive in the model store or "
                              "an allowed URL")] + [
        _param(name, kind=kind) for name, kind in (
            ("model_name", "string"), ("handler", "string"), ("batch_size", "integer"),
            ("max_batch_delay", "integer"), ("initial_workers", "integer"),
            ("synchronous", "boolean"), ("response_timeout", "integer"),
            ("startup_timeout", "integer"), ("sha256", "string"), ("replace", "boolean"),
            ("capture", "string"))]
    scale_params = [_param("min_worker", kind="integer"), _param("max_worker", kind="integer"),
                    _param("synchronous", kind="boolean"),
                    _param("capture", description="data capture settings as JSON, or false")]
    describe = {"description": "Model descriptions", "content": {"application/json": {
        "schema": {"type": "array", "items": {"type": "object"}}}}}
    return _doc("tsf Management API", {
        "/": {"options": _op("This OpenAPI description")},
        "/models": {
            "get": _op("List models", [_param("limit", kind="integer"),
                                       _param("next_page_token", kind="string")]),
            "post": _op("Register a model", register_params),
        },
        "/models/{model_name}": {
            "get": _op("Describe the default version", [MODEL, _param(
                "customized", kind="boolean",
                description="add the handler's describe_handle() as customizedMetadata")],
                describe),
            "put": _op("Scale workers", [MODEL] + scale_params),
            "delete": _op("Unregister the default version", [MODEL]),
        },
        "/models/{model_name}/{model_version}": {
            "get": _op("Describe a version ('all' for every version)", [MODEL, VERSION],
                       describe),
            "put": _op("Scale workers of a version", [MODEL, VERSION] + scale_params),
            "delete": _op("Unregister a version", [MODEL, VERSION]),
        },
        "/models/{model_name}/{model_version}/set-default": {
            "put": _op("Make a version the default", [MODEL, VERSION])},
        "/models/{model_name}/traffic": {
            "get": _op("The weighted split between versions", [MODEL]),
            "put": dict(_op("Set the split: {version: weight, ...}", [MODEL]),
                        requestBody={"content": {"application/json": {}}}),
            "delete": _op("Remove the split", [MODEL])},
        "/models/{model_name}/shadow": {
            "get": _op("The shadow rule", [MODEL]),
            "put": dict(_op("Mirror live requests: {version, percent}", [MODEL]),
                        requestBody={"content": {"application/json": {}}}),
            "delete": _op("Stop the shadow", [MODEL])},
        "/models/{model_name}/monitoring": {
            "get": _op("Capture settings and the latest quality, fairness and drift", [MODEL])},
        "/models/{model_name}/monitoring/baseline": {
            "put": dict(_op("Set the drift baseline (a tsf monitor baseline file)",
                            [MODEL, _param("version")]),
                        requestBody={"content": {"application/json": {}}}),
            "delete": _op("Drop the baseline set before", [MODEL, _param("version")])},
        "/models/{model_name}/profile": {
            "put": _op("Profile the next batches of each worker", [MODEL, _param(
                "batches", kind="integer"), _param("model_version")]),
            "get": _op("Profile runs and their files", [MODEL, _param("model_version")])},
        "/models/{model_name}/{model_version}/profile/{run}/{file}": {
            "get": _op("One profile file: Chrome trace, .prof or summary", [
                MODEL, VERSION, _param("run", "path"),
                _param("file", "path")])},
        "/plugins": {"get": _op("Loaded plugins, versions and hooks")},
        "/workflows": {
            "get": _op("List workflows", [_param("limit", kind="integer"),
                                          _param("next_page_token", kind="string")]),
            "post": _op("Register a workflow (.war)", [
                _param("url", required=True, description=".war in the model store or an "
                       "allowed URL"), _param("workflow_name")]),
        },
        "/workflows/{workflow_name}": {
            "get": _op("Describe a workflow", [WORKFLOW], describe),
            "delete": _op("Unregister a workflow and its models", [WORKFLOW]),
        },
    })


class _OpenAPIHandler(ApiHandler):
    spec = staticmethod(inference_spec)

    def options(self, *_: Any) -> None:
        self.write_json(self.spec())

    def get(self, *_: Any) -> None:
        if self.request.path == "/" and self.api == "inference":
            self.write_json({"status": "alive"})  # KServe v1 liveness (GET /)
            return
        if self.request.path != "/api-description":
            self.send_error(404)
            return
        self.write_json(self.spec())


class InferenceOpenAPIHandler(_OpenAPIHandler):
    spec = staticmethod(inference_spec)


class ManagementOpenAPIHandler(_OpenAPIHandler):
    spec = staticmethod(management_spec)

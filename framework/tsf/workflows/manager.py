"""Registered workflows: register (every node as a tsf model), list, describe, unregister, predict.

A workflow's nodes are registered as models named ``{workflow}__{node}``; they belong to the
workflow (``DELETE /models/{workflow}__{node}`` answers 409) and leave with it.  Function
nodes are models whose handler is ``handler.py:function`` from the archive, so they run in
worker processes like any model: user code never runs in the front end (which never imports
torch), and a slow or crashing function is supervised, timed out and restarted like a model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

from prometheus_client import Counter, Histogram

from ..archives.reader import ModelArchive
from ..archives.sources import ArchiveSources
from ..batching.queue import Job
from ..errors import BadRequest, Conflict, ResourceNotFound, TsfError
from ..serving.manager import MODEL_NAME, ModelManager
from ..serving.manager_types import RegisterRequest
from ..telemetry.metrics import LATENCY_BUCKETS
from ..workers.messages import Answer, Request
from .executor import WorkflowRun, node_model_name
from .spec import Node
from .war import WorkflowArchive, open_war

log = logging.getLogger(__name__)

SubmitJob = Callable[[str, Request, Any], Job]


@dataclass
class Workflow:
    """One registered workflow."""

    name: str
    url: str
    archive: WorkflowArchive
    loaded_at_startup: bool = False

    def describe(self) -> dict:
        """TorchServe's describe object, plus each node's model (``nodes``)."""
        g = self.archive.spec.globals
        spec = self.archive.spec
        return {"workflowName": self.name, "workflowUrl": self.url,
                "minWorkers": g["min-workers"], "maxWorkers": g["max-workers"],
                "batchSize": g["batch-size"], "maxBatchDelay": g["max-batch-delay"],
                "retryAttempts": g["retry-attempts"], "timeoutMs": g["timeout-ms"],
                "workflowDag": spec.dag_text(),
                "nodes": [{"name": n, "type": "model" if spec.nodes[n].is_model else "function",
                           "modelName": node_model_name(self.name, n),
                           **({"url": spec.nodes[n].url, "shared": spec.nodes[n].shared}
                              if spec.nodes[n].is_model else {})}
                          for n in spec.order]}


class WorkflowManager:
    """Owns the registered workflows; their nodes live in the :class:`ModelManager`."""

    def __init__(self, models: ModelManager) -> None:
        self.models = models
        # .war files come from workflow_store (TorchServe's key and flag), else the model store;
        # the models a workflow names always come from the model store
        store = models.config.workflow_store
        self.sources = models.sources if not store else ArchiveSources(
            dataclasses.replace(models.config, model_store=store), models.pm, models.workspace)
        self.workflows: dict[str, Workflow] = {}
        self._busy: set[str] = set()  # being registered or unregistered
        registry = models.metrics.registry
        self.node_seconds = Histogram(
            "tsf_workflow_node_duration_seconds", "Time per workflow node, from submitting "
            "its input to its answer (queue, batching and worker)",
            ("workflow", "node"), buckets=LATENCY_BUCKETS, registry=registry)
        self.requests = Counter("tsf_workflow_requests", "Workflow predictions by outcome",
                                ("workflow", "code"), registry=registry)
        self.request_seconds = Histogram(
            "tsf_workflow_request_duration_seconds", "Time per workflow prediction",
            ("workflow",), buckets=LATENCY_BUCKETS, registry=registry)

    # --- register ---------------------------------------------------------------------------
    async def register(self, url: str | None, workflow_name: str | None = None,
                       loaded_at_startup: bool = False) -> str:
        if not url:
            raise BadRequest("Parameter url is required.")
        fetched = await self.sources.fetch(url)
        try:
            archive = await asyncio.to_thread(open_war, fetched.path, self.models.workspace /
                                              "workflows", self.models.limits)
        finally:
            fetched.discard_fresh()  # the .war is unpacked; the cached download is not needed
        name = workflow_name or archive.name
        try:
            if not MODEL_NAME.fullmatch(name):
                raise BadRequest(f"invalid workflow name {name!r}: use letters, digits, '_', "
                                 "'-', '.'")
            if name in self.workflows or name in self._busy:
                raise Conflict(f"Workflow {name} is already registered")
            self._busy.add(name)
            try:
                await self._register_nodes(name, url, archive, loaded_at_startup)
            finally:
                self._busy.discard(name)
        except BaseException:
            archive.remove_files()
            raise
        self.workflows[name] = Workflow(name, url, archive, loaded_at_startup)
        log.info("workflow %s registered with nodes %s", name, archive.spec.order)
        return f"Workflow {name} has been registered and scaled successfully."

    async def _register_nodes(self, name: str, url: str, archive: WorkflowArchive,
                              loaded_at_startup: bool) -> None:
        nodes = [archive.spec.nodes[n] for n in archive.spec.order]
        for node in nodes:
            self.models.owners[node_model_name(name, node.name)] = name
            if node.shared:
                self.models.shared_models.add(node_model_name(name, node.name))
        results = await asyncio.gather(
            *(self._register_node(name, url, archive, node, loaded_at_startup)
              for node in nodes), return_exceptions=True)
        failed = [(node, r) for node, r in zip(nodes, results) if isinstance(r, BaseException)]
        if not failed:
            return
        await self._remove_nodes(name, [n.name for n, r in zip(nodes, results)
                                        if not isinstance(r, BaseException)])
        self._forget(name, [n.name for n in nodes])
        node, error = failed[0]
        if isinstance(error, TsfError):
            raise type(error)(f"workflow {name}: node {node.name} could not be registered: "
                              f"{error.message}", status=error.status, type=error.type)
        raise error

    async def _register_node(self, workflow: str, url: str, archive: WorkflowArchive,
                             node: Node, loaded_at_startup: bool) -> None:
        s = node.settings
        model_name = node_model_name(workflow, node.name)
        request = RegisterRequest(
            node.url if node.is_model else f"{url}#{node.name}", model_name=model_name,
            batch_size=s.batch_size, max_batch_delay=s.max_batch_delay,
            initial_workers=s.min_workers, response_timeout=s.response_timeout)
        if node.is_model:
            await self.models.register(request, loaded_at_startup=loaded_at_startup)
        else:
            function = ModelArchive(
                model_dir=archive.folder,
                manifest={"runtime": "python", "model": {
                    "modelName": model_name, "modelVersion": "1.0",
                    "handler": f"{archive.handler}:{node.name}"}})
            await self.models.register_unpacked(request, function,
                                                loaded_at_startup=loaded_at_startup)
        mv = self.models.registry.get(model_name)
        mv.settings.max_workers = max(s.max_workers, mv.settings.min_workers)

    async def _remove_nodes(self, workflow: str, nodes: list[str]) -> None:
        for node in nodes:
            try:
                await self.models.unregister(node_model_name(workflow, node), None,
                                             owner=workflow)
            except TsfError as exc:
                log.warning("workflow %s: removing node %s: %s", workflow, node, exc.message)

    def _forget(self, workflow: str, nodes: list[str]) -> None:
        for node in nodes:
            self.models.owners.pop(node_model_name(workflow, node), None)
            self.models.shared_models.discard(node_model_name(workflow, node))

    # --- list / describe / unregister -------------------------------------------------------
    def get(self, name: str) -> Workflow:
        try:
            return self.workflows[name]
        except KeyError:
            raise ResourceNotFound(f"Workflow not found: {name}") from None

    def list(self, limit: int, token: int) -> dict[str, Any]:
        """One page of ``GET /workflows`` (at most 100; ``nextPageToken`` while more remain)."""
        limit = 100 if limit <= 0 or limit > 100 else limit
        token = max(token, 0)
        names = sorted(self.workflows)
        body: dict[str, Any] = {"workflows": [
            {"workflowName": n, "workflowUrl": self.workflows[n].url}
            for n in names[token:token + limit]]}
        if token + limit < len(names):
            body["nextPageToken"] = str(token + limit)
        return body

    async def unregister(self, name: str) -> str:
        workflow = self.get(name)
        if name in self._busy:
            raise Conflict(f"workflow {name} is being registered or unregistered")
        self._busy.add(name)
        try:
            await self._remove_nodes(name, workflow.archive.spec.order)
            self._forget(name, workflow.archive.spec.order)
            del self.workflows[name]
            await asyncio.to_thread(workflow.archive.remove_files)
        finally:
            self._busy.discard(name)
        return f'Workflow "{name}" unregistered'

    async def shutdown(self) -> None:
        """Forget every workflow and delete its files (its models are removed by the models)."""
        for workflow in list(self.workflows.values()):
            workflow.archive.remove_files()
        self.workflows.clear()

    # --- predict ----------------------------------------------------------------------------
    async def predict(self, name: str, request: Request, submit: SubmitJob,
                      span: Any = None) -> Answer:
        workflow = self.get(name)
        if name in self._busy:
            raise Conflict(f"workflow {name} is being unregistered")
        run = WorkflowRun(name, workflow.archive.spec, submit, tracing=self.models.tracing,
                          span=span, observe=lambda node, seconds, status:
                          self.node_seconds.labels(name, node).observe(seconds))
        return await run.run(request)

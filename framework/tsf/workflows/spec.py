"""The workflow specification (TorchServe's ``spec.yaml``): models, their settings, and the DAG.

``models`` holds global settings (``min-workers``, ``max-workers``, ``batch-size``,
``max-batch-delay``, ``retry-attempts``, ``timeout-ms``) and one entry per model with a ``url``
and overrides of those settings (and tsf's ``shared: true``: the model also takes requests sent
to it directly).  ``dag`` maps each node to the nodes it feeds.  A node that is
not a model must be a top-level function of the workflow's handler file.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest

SETTING_KEYS = ("min-workers", "max-workers", "batch-size", "max-batch-delay",
                "retry-attempts", "timeout-ms")
DEFAULTS = {"min-workers": 1, "max-workers": 1, "batch-size": 1, "max-batch-delay": 50,
            "retry-attempts": 1, "timeout-ms": 10000}
NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
MAX_NODES = 64


@dataclass
class NodeSettings:
    """Queue and worker settings of one node, after the global values and its overrides."""

    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay: int
    retry_attempts: int
    timeout_ms: int

    @property
    def response_timeout(self) -> int:
        """``timeout-ms`` in whole seconds (tsf's response timeout), at least one."""
        return max(1, math.ceil(self.timeout_ms / 1000))


@dataclass
class Node:
    """A DAG node: a model (``url`` set) or a function of the handler file."""

    name: str
    settings: NodeSettings
    url: str | None = None
    shared: bool = False  # the model also takes direct requests (tsf's own spec key)

    @property
    def is_model(self) -> bool:
        return self.url is not None


@dataclass
class WorkflowSpec:
    """A validated workflow: its nodes, edges, and the order they may run in."""

    nodes: dict[str, Node]
    children: dict[str, list[str]]
    parents: dict[str, list[str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    globals: dict[str, int] = field(default_factory=dict)

    @property
    def start(self) -> str:
        return self.order[0]

    @property
    def leaves(self) -> list[str]:
        return [n for n in self.order if not self.children[n]]

    def dag_text(self) -> str:
        """The DAG as TorchServe's describe shows it: ``{a=[b], b=[c]}``."""
        edges = ", ".join(f"{n}=[{', '.join(self.children[n])}]" for n in self.order
                          if self.children[n])
        return "{" + edges + "}"


def _int_setting(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**31 - 1:
        raise BadRequest(f"workflow spec: {where} {key} must be a non-negative integer, got "
                         f"{value!r:.60}")
    return value


def _settings(where: str, values: dict[str, Any], base: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for key in SETTING_KEYS:
        if key in values:
            out[key] = _int_setting(where, key, values[key])
    if out["batch-size"] < 1 or out["timeout-ms"] < 1:
        raise BadRequest(f"workflow spec: {where} batch-size and timeout-ms must be >= 1")
    return out


def handler_functions(source: str) -> set[str]:
    """Names of the top-level functions of a handler file, read without importing it.

    (The front end never runs user code: the functions run in worker processes.)
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        raise BadRequest(f"workflow handler file does not parse: {exc}") from None
    return {node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def parse_spec(document: Any, functions: set[str]) -> WorkflowSpec:
    """Validate a parsed spec.yaml; every error is a 400 that names the node or key."""
    if not isinstance(document, dict):
        raise BadRequest("workflow spec must be a mapping with 'models' and 'dag'")
    models = document.get("models") or {}
    dag = document.get("dag")
    if not isinstance(models, dict):
        raise BadRequest("workflow spec: 'models' must be a mapping")
    if not isinstance(dag, dict) or not dag:
        raise BadRequest("workflow spec: 'dag' must be a non-empty mapping of node -> [nodes]")
    unknown = set(document) - {"models", "dag"}
    if unknown:
        raise BadRequest(f"workflow spec: unknown section(s) {sorted(map(str, unknown))}")
    base = _settings("global", models, DEFAULTS)
    entries = {k: v for k, v in models.items() if k not in SETTING_KEYS}
    children: dict[str, list[str]] = {}
    for name, targets in dag.items():
        if isinstance(targets, str):
            targets = [targets]
        if targets is None:
            targets = []
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise BadRequest(f"workflow spec: dag entry {name!r} must list node names")
        children.setdefault(str(name), [])
        for target in targets:
            if target not in children[str(name)]:
                children[str(name)].append(target)
            children.setdefault(target, [])
    if len(children) > MAX_NODES:
        raise BadRequest(f"workflow spec: more than {MAX_NODES} nodes")
    nodes: dict[str, Node] = {}
    for name in children:
        if not NODE_NAME.fullmatch(name):
            raise BadRequest(f"workflow spec: node name {name[:80]!r} is not valid (letters, "
                             "digits, '_', '-')")
        entry = entries.get(name)
        if entry is not None:
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) \
                    or not entry["url"]:
                raise BadRequest(f"workflow spec: model {name!r} needs a 'url'")
            extra = set(entry) - set(SETTING_KEYS) - {"url", "shared"}
            if extra:
                raise BadRequest(f"workflow spec: model {name!r} has unknown key(s) "
                                 f"{sorted(map(str, extra))}")
            values = _settings(f"model {name!r}", entry, base)
            shared = entry.get("shared", False)
            if not isinstance(shared, bool):
                raise BadRequest(f"workflow spec: model {name!r} shared must be true or false")
            nodes[name] = Node(name, _node_settings(values), url=entry["url"], shared=shared)
        elif name in functions:
            nodes[name] = Node(name, _node_settings(base))
        else:
            raise BadRequest(f"workflow spec: dag node {name!r} is neither a model in 'models' "
                             "nor a function of the handler file")
    unused = set(entries) - set(nodes)
    if unused:
        raise BadRequest(f"workflow spec: model(s) {sorted(map(str, unused))} are not in the dag")
    spec = WorkflowSpec(nodes=nodes, children=children, globals=base)
    spec.parents = {n: [p for p in children if n in children[p]] for n in children}
    spec.order = _topological(spec)
    starts = [n for n in spec.order if not spec.parents[n]]
    if len(starts) != 1:
        raise BadRequest(f"workflow spec: the dag must have exactly one start node (a node no "
                         f"other node feeds); it has {starts}")
    return spec


def _node_settings(values: dict[str, int]) -> NodeSettings:
    return NodeSettings(min_workers=values["min-workers"],
                        max_workers=max(values["max-workers"], values["min-workers"]),
                        batch_size=values["batch-size"],
                        max_batch_delay=values["max-batch-delay"],
                        retry_attempts=values["retry-attempts"],
                        timeout_ms=values["timeout-ms"])


def _topological(spec: WorkflowSpec) -> list[str]:
    waiting = {n: len(spec.parents[n]) for n in spec.children}
    ready = [n for n in spec.children if waiting[n] == 0]
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for child in spec.children[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) != len(spec.children):
        cycle = sorted(n for n in spec.children if n not in order)
        raise BadRequest(f"workflow spec: the dag has a cycle through {cycle}")
    return order

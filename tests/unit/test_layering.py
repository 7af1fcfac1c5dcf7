"""The package order of ``framework/tsf``: each package (or top-level module group) imports only
what lies below it, so ``ls framework/tsf`` reads as the architecture (docs/architecture.md).

The HTTP adapters (``server``) and the gRPC adapters (``grpc_api``) meet only in the data plane:
neither imports the other, and neither imports the composition root.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import tsf

PACKAGE = Path(tsf.__file__).parent

# top to bottom; a unit may import its own modules and any unit on a later line, nothing else.
# Units on one line are peers that never import each other.
ORDER = [
    ["cli"],
    ["app"],
    ["sagemaker", "openai_api"],  # HTTP protocols built on server/'s handler bases
    ["server", "grpc_api"],
    ["core"],  # dataplane, services, outcome, auth, memory
    ["jobs"],  # the job store, runner and callbacks; tsf batch
    ["monitoring"],  # capture observes answered requests; below the data plane and adapters
    ["workflows"],
    ["serving"],
    ["batching"],
    ["telemetry"],
    ["optimize"],  # tsf optimize: runs the worker layer in its own process
    ["testing"],
    ["worker"],  # runtime/ and the plugin API: handler, context, hookspecs, plugins
    ["oip"],
    ["workers"],
    ["archives"],
    ["config"],
    ["base"],  # tsf itself, errors, json_body
]
TOP_LEVEL_UNITS = {"cli": "cli", "app": "app", "dataplane": "core", "services": "core",
                   "outcome": "core", "auth": "core", "memory": "core", "handler": "worker",
                   "context": "worker", "hookspecs": "worker", "plugins": "worker",
                   "errors": "base", "json_body": "base", "__init__": "base"}
PACKAGE_UNITS = {"runtime": "worker", "generation": "worker"}
RANK = {unit: rank for rank, units in enumerate(ORDER) for unit in units}


def unit_of(parts: list[str]) -> str:
    """The unit of a module given as its path parts below ``tsf``."""
    if len(parts) == 1 and not (PACKAGE / parts[0]).is_dir():
        return TOP_LEVEL_UNITS[parts[0]]
    return PACKAGE_UNITS.get(parts[0], parts[0])


def module_parts(name: str) -> list[str] | None:
    """``tsf.a.b`` -> the parts of the module file it names below ``tsf`` (None: not tsf's)."""
    if name != "tsf" and not name.startswith("tsf."):
        return None
    parts = name.split(".")[1:]
    while parts and not ((PACKAGE.joinpath(*parts).with_suffix(".py")).exists()
                         or (PACKAGE.joinpath(*parts) / "__init__.py").exists()):
        parts.pop()  # a name imported from a module, not a module
    return parts or ["__init__"]


def imports(path: Path) -> set[str]:
    """Absolute names of what a module imports (modules, and names imported from them)."""
    parts = ["tsf", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1] + ["__init__"]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_unit():
    for path in MODULES:
        assert unit_of(list(path.relative_to(PACKAGE).with_suffix("").parts)) in RANK, path


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_package_order(path):
    own = unit_of(list(path.relative_to(PACKAGE).with_suffix("").parts))
    wrong = []
    for name in imports(path):
        parts = module_parts(name)
        if parts is None:
            continue
        target = unit_of(parts)
        if target != own and RANK[target] <= RANK[own]:
            wrong.append(f"{name} ({target})")
    assert not wrong, f"{path.relative_to(PACKAGE)} ({own}) imports {sorted(set(wrong))}"


# server/'s modules that another HTTP protocol may build on (its handler bases, not its routes)
SERVER_BASES = ("tsf.server.api_handler", "tsf.server.model_request", "tsf.server.json_handler")
SERVER_ROUTES = tuple(f"tsf.server.{p.stem}" for p in (PACKAGE / "server").glob("*.py")
                      if f"tsf.server.{p.stem}" not in SERVER_BASES and p.stem != "__init__")


@pytest.mark.parametrize("package, forbidden", [
    ("server", ("tsf.grpc_api", "tsf.app", "tsf.openai_api", "tsf.sagemaker")),
    ("grpc_api", ("tsf.server", "tsf.app", "tsf.openai_api")),
    ("openai_api", ("tsf.grpc_api", "tsf.app", "tsf.sagemaker") + SERVER_ROUTES)])
def test_adapters_do_not_import_each_other(package, forbidden):
    for path in (PACKAGE / package).rglob("*.py"):
        names = imports(path)
        wrong = sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))
        assert not wrong, f"{path} imports {wrong}"


def test_the_top_level_reads_as_a_table_of_contents():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(modules) <= 15, modules
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
    assert not long, f"modules over 450 lines: {long}"


@pytest.mark.parametrize("old, new", sorted(tsf.MOVED_MODULES.items()))
def test_old_module_paths_still_import(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)

"""The HTTP adapters (``tsf.server``) and the gRPC adapters (``tsf.grpc_api``) meet only in the
data plane: neither package imports the other, and neither imports the composition root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tsf

PACKAGE = Path(tsf.__file__).parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """``{file: absolute names of the tsf modules it imports}`` for each module of a package."""
    found = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        parts = ["tsf", *path.relative_to(PACKAGE).with_suffix("").parts]
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = parts[:len(parts) - node.level] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(PACKAGE))] = names
    return found


@pytest.mark.parametrize("package, forbidden", [("server", ("tsf.grpc_api", "tsf.app")),
                                                ("grpc_api", ("tsf.server", "tsf.app"))])
def test_adapters_do_not_import_each_other(package, forbidden):
    for path, names in imported_modules(package).items():
        wrong = sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))
        assert not wrong, f"{path} imports {wrong}"

"""Workflow archives (``.war``): reading them with tsf's safe extraction, and writing them.

A ``.war`` (torch-workflow-archiver's format) is a zip holding ``WAR-INF/MANIFEST.json``
(``{"workflow": {"workflowName", "specFile", "handler"}}``), the spec YAML, the handler file and
any extra files.  A plain folder with the same layout is accepted too.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..archives.reader import Limits, confined_path, extract, read_metadata, read_yaml
from ..errors import BadRequest, InvalidArchive
from .spec import WorkflowSpec, handler_functions, parse_spec

WAR_MANIFEST = "WAR-INF/MANIFEST.json"


@dataclass
class WorkflowArchive:
    """An unpacked workflow archive with its validated spec."""

    folder: Path
    name: str
    spec: WorkflowSpec
    handler: str  # file name inside ``folder``
    owned: bool   # the folder was extracted by tsf (delete it with the workflow)

    def remove_files(self) -> None:
        if self.owned:
            shutil.rmtree(self.folder, ignore_errors=True)


def _text(path: Path, what: str) -> str:
    return read_metadata(path, f"workflow archive: {what}")


def _manifest(folder: Path) -> dict:
    try:
        manifest = json.loads(_text(folder / WAR_MANIFEST, WAR_MANIFEST))
    except (ValueError, RecursionError) as exc:
        raise InvalidArchive(f"{WAR_MANIFEST} is not valid JSON: {exc}") from None
    workflow = manifest.get("workflow") if isinstance(manifest, dict) else None
    if not isinstance(workflow, dict) or not all(
            isinstance(workflow.get(k), str) and workflow.get(k)
            for k in ("workflowName", "specFile", "handler")):
        raise InvalidArchive(f"{WAR_MANIFEST} needs a 'workflow' object with workflowName, "
                             "specFile and handler")
    return workflow


def read_workflow(folder: Path, owned: bool) -> WorkflowArchive:
    """Read and validate an unpacked archive (its spec and handler paths stay inside it)."""
    workflow = _manifest(folder)
    spec_path = confined_path(folder, workflow["specFile"], "specFile")
    handler_path = confined_path(folder, workflow["handler"], "handler")
    if handler_path.suffix != ".py":
        raise InvalidArchive(f"workflow handler {workflow['handler']!r} must be a .py file")
    document = read_yaml(spec_path, workflow["specFile"])
    functions = handler_functions(_text(handler_path, workflow["handler"]))
    spec = parse_spec(document, functions)
    return WorkflowArchive(folder=folder, name=workflow["workflowName"], spec=spec,
                           handler=str(handler_path.relative_to(folder.resolve())),
                           owned=owned)


def open_war(path: Path, workspace: Path, limits: Limits) -> WorkflowArchive:
    """Extract (under the archive limits) and read a ``.war``; a refused one leaves nothing."""
    folder = extract(Path(path), workspace, limits)
    owned = folder != Path(path)
    try:
        return read_workflow(folder, owned)
    except BaseException:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
        raise


@dataclass
class WarSpec:
    """torch-workflow-archiver's arguments."""

    workflow_name: str
    spec_file: str
    handler: str
    export_path: str = "."
    extra_files: str | None = None
    force: bool = False


def write_war(spec: WarSpec) -> Path:
    """Write ``{workflow_name}.war`` into ``export_path`` and return its path."""
    out = Path(spec.export_path) / f"{spec.workflow_name}.war"
    if out.exists() and not spec.force:
        raise BadRequest(f"{out} already exists; use -f to overwrite it")
    sources = [Path(spec.spec_file), Path(spec.handler)]
    extras = [Path(p.strip()) for p in (spec.extra_files or "").split(",") if p.strip()]
    for path in sources + extras:
        if not path.exists():
            raise BadRequest(f"{path} does not exist")
    handler_functions(sources[1].read_text())  # refuse a handler that does not parse
    manifest: dict[str, Any] = {
        "createdOn": datetime.now(timezone.utc).strftime("%d/%m/%Y %H:%M:%S"),
        "workflow": {"workflowName": spec.workflow_name, "specFile": sources[0].name,
                     "handler": sources[1].name},
        "archiverVersion": __version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".tmp", delete=False) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(WAR_MANIFEST, json.dumps(manifest, indent=2))
            for path in sources:
                zf.write(path, path.name)
            for path in extras:
                if path.is_dir():
                    for item in sorted(p for p in path.rglob("*") if p.is_file()):
                        zf.write(item, item.relative_to(path.parent).as_posix())
                else:
                    zf.write(path, path.name)
    Path(tmp.name).replace(out)
    return out

"""``tsf check-archive``: load an archive's handler in a real worker, run one request if given,
and report what is missing (Python modules, a handler plugin, tsf-ts-compat)."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..archives.reader import Limits, open_archive
from ..errors import ModelLoadError, TsfError
from .messages import Batch, Part, Request
from .process import WorkerProcess

_MISSING_MODULE = re.compile(r"No module named '([^']+)'")
_IMPORTS_TS = re.compile(r"^\s*(from|import)\s+ts(\.|\s)", re.MULTILINE)


def _missing(error: str) -> list[str]:
    """Hints for what a load error says is absent."""
    hints = []
    for module in dict.fromkeys(_MISSING_MODULE.findall(error)):
        top = module.split(".")[0]
        if top == "ts":
            hints.append("the ts package: pip install tsf-ts-compat")
        else:
            hints.append(f"the Python module {module!r} (pip install the package that "
                         "provides it, or add it to the archive with --extra-files)")
    plugin = re.search(r"pip install (tsf-[\w-]+)", error)
    if plugin and not hints:
        hints.append(f"the plugin {plugin.group(1)}: pip install {plugin.group(1)}")
    return hints


async def check_archive(path: str | Path, data: bytes | None = None,
                        content_type: str = "application/octet-stream",
                        timeout: float = 120.0) -> dict[str, Any]:
    """Load ``path`` in a worker (and run ``data`` through it); a report as a dict."""
    workspace = Path(tempfile.mkdtemp(prefix="tsf-check-"))
    report: dict[str, Any] = {"archive": str(path), "loaded": False, "missing": []}
    worker: WorkerProcess | None = None
    try:
        archive = open_archive(Path(path), workspace, Limits())
        handler = archive.handler or "base"
        report.update(model_name=archive.model_name, version=archive.model_version,
                      handler=handler)
        handler_file = archive.model_dir / Path(handler.partition(":")[0]).name
        if handler_file.suffix == ".py" and handler_file.is_file():
            report["imports_ts"] = bool(_IMPORTS_TS.search(
                handler_file.read_text(errors="replace")))
        spec = {"model_name": archive.model_name, "model_version": archive.model_version,
                "model_dir": str(archive.model_dir), "manifest": archive.manifest,
                "model_config": archive.model_config, "handler": archive.handler,
                "batch_size": 1}
        worker = WorkerProcess("check", 0, spec, threads=1)
        try:
            await worker.start(timeout)
        except ModelLoadError as exc:
            report["error"] = exc.message
            report["missing"] = _missing(exc.message + "\n" + worker.tail_text())
            return report
        report["loaded"] = True
        report["device"] = worker.device
        if data is not None:
            batch = Batch([Request("check-0", [Part("body", data, content_type)])])
            [answer] = (await worker.run_batch(batch, timeout)).answers
            report["response"] = {"status": answer.status, "content_type": answer.ctype,
                                  "body": answer.body[:2000].decode("utf-8", "replace")}
        return report
    except TsfError as exc:
        report["error"] = exc.message
        return report
    except OSError as exc:  # no such archive, unreadable file
        report["error"] = f"{type(exc).__name__}: {exc}"
        return report
    finally:
        if worker is not None and worker.proc is not None:
            await worker.stop()
        shutil.rmtree(workspace, ignore_errors=True)


def run_check(path: str, data: bytes | None, content_type: str, timeout: float) -> dict:
    return asyncio.run(check_archive(path, data, content_type, timeout))


def format_report(report: dict) -> str:
    lines = [f"archive:  {report['archive']}"]
    if "model_name" in report:
        lines.append(f"model:    {report['model_name']} {report['version']}, handler "
                     f"{report['handler']}" + (" (imports ts)" if report.get("imports_ts")
                                                else ""))
    lines.append("loaded:   " + (f"yes, on {report.get('device', 'cpu')}" if report["loaded"]
                                 else "no"))
    if report.get("error"):
        lines.append(f"error:    {report['error']}")
    for item in report["missing"]:
        lines.append(f"missing:  {item}")
    response = report.get("response")
    if response:
        lines.append(f"response: {response['status']} {response['content_type']}")
        lines.append(response["body"])
    return "\n".join(lines)


def passed(report: dict) -> bool:
    response = report.get("response")
    return report["loaded"] and (response is None or response["status"] < 400)

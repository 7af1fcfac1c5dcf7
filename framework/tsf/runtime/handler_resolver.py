"""Turning the manifest's ``handler`` into a plugin object registered in the worker.

The handler may be:

* a name registered by a plugin through ``tsf_register_handlers`` (``base``, ``image_classifier``);
* ``file.py`` (or ``file.py:function``) inside the archive, holding either a class with ``tsf_*``
  stage methods, a TorchServe-style class (``initialize``/``handle`` or
  ``preprocess``/``inference``/``postprocess``), or a module-level ``handle(data, context)``.
  As in TorchServe, a module-level ``handle`` is the entry point even where classes are defined
  beside it (a class with ``tsf_*`` stage methods still comes first).

Handler files that import ``ts`` get tsf-ts-compat's; TorchServe's own ``ts`` is refused (see
:func:`check_ts_package`).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pluggy

from .. import hookimpl, hookspecs
from ..errors import ModelLoadError
from ..plugins import handler_names, resolve_class

# Handler names of TorchServe's defaults and the tsf plugin distribution that provides each.
KNOWN_HANDLER_PLUGINS = {
    "image_classifier": "tsf-handler-image",
    "object_detector": "tsf-handler-detector",
    "image_segmenter": "tsf-handler-segmenter",
    "text_classifier": "tsf-handler-text",
}


def import_file(path: Path, module_name: str | None = None) -> ModuleType:
    """Import a .py file from an archive (its folder goes on sys.path for sibling imports)."""
    if not path.is_file():
        raise ModelLoadError(f"{path.name} is not in the archive")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = module_name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelLoadError(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    return module


class FunctionHandler:
    """Adapts a TorchServe module-level ``handle(data, context)`` function."""

    def __init__(self, function: Callable) -> None:
        self.function = function

    @hookimpl
    def tsf_load_model(self, context: Any) -> Any:
        self.function(None, context)  # TorchServe initialises function handlers this way
        return self

    @hookimpl
    def tsf_explain(self, context: Any, requests: list[dict]) -> Any:
        mark_explain(context)
        return self.function(requests, context)

    @hookimpl
    def tsf_preprocess(self, context: Any, requests: list[dict]) -> Any:
        return requests

    @hookimpl
    def tsf_inference(self, context: Any, batch: Any) -> Any:
        return self.function(batch, context)

    @hookimpl
    def tsf_postprocess(self, context: Any, outputs: Any) -> list:
        return outputs


class TorchServeClassHandler:
    """Adapts a TorchServe-style handler class (``initialize`` + ``handle`` or stage methods)."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.staged = not hasattr(instance, "handle") and all(
            hasattr(instance, m) for m in ("preprocess", "inference", "postprocess"))

    @property
    def prepare_request(self) -> Any:
        """The handler's own, if it prepares requests ahead (see tsf.runtime.read_ahead)."""
        return getattr(self.instance, "prepare_request", None)

    @hookimpl
    def tsf_load_model(self, context: Any) -> Any:
        if hasattr(self.instance, "initialize"):
            self.instance.initialize(context)
        model = getattr(self.instance, "model", None)
        # not `or`: a torch.compile'd model raises on truthiness
        return self.instance if model is None else model

    @hookimpl
    def tsf_preprocess(self, context: Any, requests: list[dict]) -> Any:
        return self.instance.preprocess(requests) if self.staged else requests

    @hookimpl
    def tsf_inference(self, context: Any, batch: Any) -> Any:
        if self.staged:
            return self.instance.inference(batch)
        return self.instance.handle(batch, context)

    @hookimpl
    def tsf_postprocess(self, context: Any, outputs: Any) -> list:
        return self.instance.postprocess(outputs) if self.staged else outputs

    @hookimpl
    def tsf_explain(self, context: Any, requests: list[dict]) -> Any:
        """TorchServe's explanations: ``handle`` with the ``explain`` header set."""
        if self.staged:
            return None
        mark_explain(context)
        return self.instance.handle(requests, context)


def mark_explain(context: Any) -> None:
    """Set the ``explain: True`` request header TorchServe's front end sends to explanations."""
    for processor in context.request_processor:
        processor.set_request_property("explain", "True")


def _has_stage_hooks(cls: type) -> bool:
    return any(name.startswith("tsf_") and hasattr(hookspecs, name) for name in dir(cls))


def _is_torchserve_class(cls: type) -> bool:
    return hasattr(cls, "handle") or hasattr(cls, "initialize") or all(
        hasattr(cls, m) for m in ("preprocess", "inference", "postprocess"))


def adapt_module(module: ModuleType, function: str = "") -> Any:
    """The plugin object for a handler module from an archive."""
    if function:
        target = getattr(module, function, None)
        if not callable(target):
            raise ModelLoadError(f"handler module has no function {function!r}")
        return FunctionHandler(target)
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if obj.__module__ == module.__name__]
    hook_classes = [c for c in classes if _has_stage_hooks(c)]
    if len(hook_classes) == 1:
        return hook_classes[0]()
    # TorchServe's rule: a module-level ``handle`` is the entry point even beside classes
    if not hook_classes and callable(getattr(module, "handle", None)):
        return FunctionHandler(module.handle)
    ts_classes = [c for c in classes if _is_torchserve_class(c)]
    if not hook_classes and len(ts_classes) == 1:
        return TorchServeClassHandler(ts_classes[0]())
    found = ", ".join(c.__name__ for c in (hook_classes or ts_classes)) or "none"
    raise ModelLoadError(
        "a handler file must define one handler class (with tsf_* stage methods, or "
        f"TorchServe's initialize/handle) or a module-level handle(data, context); found: {found}")


_IMPORTS_TS = re.compile(r"^\s*(from|import)\s+ts(\.|\s)", re.MULTILINE)


def check_ts_package(path: Path) -> None:
    """Refuse a handler that imports ``ts`` when ``ts`` is not tsf-ts-compat's.

    TorchServe's ``torchserve`` distribution installs a package of the same name; its handlers
    expect TorchServe's backend, so a handler importing it would fail in confusing ways.
    """
    try:
        if not _IMPORTS_TS.search(path.read_text(errors="replace")):
            return
    except OSError:
        return
    spec = importlib.util.find_spec("ts")
    if spec is None:
        raise ModelLoadError(f"{path.name} imports ts, TorchServe's handler package: "
                             "pip install tsf-ts-compat")
    folders = list(spec.submodule_search_locations or [])
    if not any((Path(folder) / "TSF_COMPAT").is_file() for folder in folders):
        raise ModelLoadError(
            f"{path.name} imports ts, but the ts package found ({', '.join(folders)}) is "
            "TorchServe's, not tsf-ts-compat's: pip uninstall torchserve, then pip install "
            "--force-reinstall tsf-ts-compat (keep TorchServe in its own environment)")


def describe_hook(handler: Any) -> Callable[[], Any] | None:
    """The handler's ``describe_handle()`` (TorchServe's hook behind ``?customized=true``),
    on the handler itself or on the TorchServe class it adapts; None if it has none."""
    for target in (handler, getattr(handler, "instance", None)):
        hook = getattr(target, "describe_handle", None)
        if callable(hook):
            return hook
    return None


def missing_handler_message(name: str) -> str:
    plugin = KNOWN_HANDLER_PLUGINS.get(name)
    if plugin:
        return (f"handler {name!r} is provided by the plugin {plugin}, which is not installed: "
                f"pip install {plugin}")
    return (f"handler {name!r} is neither an installed plugin's handler nor a .py file in the "
            "archive (see `tsf plugins` for installed handlers)")


def resolve_handler(name: str, model_dir: str | Path, pm: pluggy.PluginManager) -> Any:
    """Instantiate the handler the manifest names, ready to register in ``pm``."""
    name = name or "base"
    path, _, function = name.partition(":")
    if path.endswith(".py"):
        check_ts_package(Path(model_dir) / Path(path).name)
        module = import_file(Path(model_dir) / Path(path).name, f"tsf_handler_{Path(path).stem}")
        return adapt_module(module, function)
    registry = handler_names(pm)
    if name not in registry:
        raise ModelLoadError(missing_handler_message(name))
    return resolve_class(registry[name])()

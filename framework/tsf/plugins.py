"""Plugin manager setup: built-in plugins, entry points (group ``tsf``), blocking and listing.

``TSF_DISABLE_PLUGINS=name1,name2`` keeps plugins with those names (entry-point names or
built-in names) from loading.  Plugin modules are imported in the front end too, so they must
import torch lazily (inside hook functions), never at module level.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from typing import Any, Iterable

import pluggy

from . import PROJECT_NAME, hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME

# Built-in plugins loaded in the front end and in workers; the worker adds its own on top.
FRONTEND_BUILTINS = ("tsf.storage", "tsf.capture")
WORKER_BUILTINS = ("tsf.handler",)
# a built-in plugin's name (what ``tsf plugins`` lists and TSF_DISABLE_PLUGINS names) -> its module
BUILTIN_MODULES = {"tsf.storage": "tsf.archives.storage", "tsf.handler": "tsf.handler",
                   "tsf.capture": "tsf.monitoring.jsonl_sink"}


class TsfPluginManager(pluggy.PluginManager):
    """A PluginManager that also accepts undecorated methods named like a tsf hook.

    Handler classes often subclass a base handler and override ``tsf_preprocess`` without
    repeating ``@hookimpl``; pluggy alone would then drop the override.
    """

    def parse_hookimpl_opts(self, plugin: Any, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(PROJECT_NAME + "_") and hasattr(hookspecs, name):
            member = getattr(plugin, name, None)
            if callable(member) and not isinstance(plugin, type):
                opts = {}
        if opts is not None and getattr(plugin, "tsf_fallback", False):
            opts = dict(opts, trylast=True)
        return opts


def disabled_names() -> set[str]:
    raw = os.environ.get("TSF_DISABLE_PLUGINS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def create_manager(builtins: Iterable[str] = FRONTEND_BUILTINS, *, load_entry_points: bool = True
                   ) -> TsfPluginManager:
    """Return a manager with the hookspecs, the given built-in modules and installed plugins."""
    pm = TsfPluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    blocked = disabled_names()
    for modname in builtins:
        if modname in blocked:
            continue
        pm.register(importlib.import_module(BUILTIN_MODULES.get(modname, modname)), name=modname)
    if load_entry_points:
        for ep in _entry_points():
            if ep.name in blocked or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the server down
                log.error("plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
                continue
            pm.register(plugin, name=ep.name)
            _versions[ep.name] = ep.dist.version if ep.dist else ""
    pm.check_pending()
    return pm


_versions: dict[str, str] = {}


def describe_plugins(pm: pluggy.PluginManager) -> list[dict]:
    """``[{"name", "version", "hooks"}]`` for every registered plugin (for CLI and API)."""
    from . import __version__

    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        hooks = sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))
        version = _versions.get(name) or (__version__ if name.startswith("tsf.") else "")
        out.append({"name": name, "version": version, "hooks": hooks})
    return out


def handler_names(pm: pluggy.PluginManager) -> dict[str, Any]:
    """All handlers contributed by plugins: ``{name: class or "module:attr"}``."""
    merged: dict[str, Any] = {}
    for result in reversed(pm.hook.tsf_register_handlers()):
        merged.update(result or {})
    return merged


def resolve_class(ref: Any) -> type:
    """A handler class from a class or a lazy ``"package.module:Class"`` reference."""
    if isinstance(ref, str):
        module_name, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module_name), attr)
    return ref

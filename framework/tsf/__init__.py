"""tsf: a plugin-based PyTorch model server.

Plugin authors import ``hookimpl`` from here::

    from tsf import hookimpl

    class MyHandler:
        @hookimpl
        def tsf_preprocess(self, context, requests): ...
"""

import importlib
import importlib.abc
import importlib.util
import sys

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "tsf"
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["hookimpl", "PROJECT_NAME", "__version__"]

# Modules that moved into packages keep their old import paths: ``import tsf.archiver`` gives
# the module ``tsf.archives.writer`` itself, so plugins written against the old paths still work.
MOVED_MODULES = {
    "tsf.archive": "tsf.archives.reader", "tsf.archiver": "tsf.archives.writer",
    "tsf.sources": "tsf.archives.sources", "tsf.storage": "tsf.archives.storage",
    "tsf.labels": "tsf.archives.labels", "tsf.archive_check": "tsf.workers.archive_check",
    "tsf.bounded_yaml": "tsf.config.bounded_yaml",
    "tsf.torchserve_keys": "tsf.config.torchserve_keys",
    "tsf.model_options": "tsf.config.model_options",
    "tsf.sagemaker.settings": "tsf.config.sagemaker",
    "tsf.autoscale": "tsf.serving.autoscale", "tsf.manager": "tsf.serving.manager",
    "tsf.manager_types": "tsf.serving.manager_types", "tsf.registry": "tsf.serving.registry",
    "tsf.version_builder": "tsf.serving.version_builder", "tsf.rollout": "tsf.serving.rollout",
    "tsf.traffic": "tsf.serving.traffic", "tsf.shadow": "tsf.serving.shadow",
    "tsf.health": "tsf.serving.health", "tsf.lifecycle": "tsf.serving.lifecycle",
    "tsf.store_watch": "tsf.serving.store_watch", "tsf.snapshot": "tsf.serving.snapshot",
    "tsf.observer": "tsf.serving.observer", "tsf.metrics": "tsf.telemetry.metrics",
    "tsf.loop_metrics": "tsf.telemetry.loop_metrics", "tsf.tracing": "tsf.telemetry.tracing",
    "tsf.logs": "tsf.telemetry.logs", "tsf.handler_metrics": "tsf.runtime.handler_metrics",
    "tsf.handler_resolver": "tsf.runtime.handler_resolver",
    "tsf.model_loader": "tsf.runtime.model_loader", "tsf.workers.main": "tsf.runtime.main",
    "tsf.workers.batch_runner": "tsf.runtime.batch_runner",
    "tsf.workers.warmup": "tsf.runtime.warmup", "tsf.workers.lifeline": "tsf.runtime.lifeline",
    "tsf.spawn": "tsf.workers.spawn", "tsf.requirements_env": "tsf.workers.requirements_env",
    "tsf.request_id": "tsf.dataplane",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module now at its new path."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - importlib's protocol
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec):  # noqa: ANN001
        return None

    def exec_module(self, module):  # noqa: ANN001
        # the import system returns what sys.modules holds under the name once this returns
        sys.modules[module.__name__] = importlib.import_module(MOVED_MODULES[module.__name__])


sys.meta_path.append(_MovedModuleFinder())

"""The worker process: its main loop, the batch runner that calls a handler's stages, warm-up,
turning the manifest's ``handler`` into a plugin, loading weights, and handlers' custom metrics.

Together with the plugin API at the top of the package (``tsf.handler``, ``tsf.context``,
``tsf.hookspecs``, ``tsf.plugins``) it forms the worker layer. May import: ``oip`` and everything
below it. Only ever run inside worker processes, so it may import torch (lazily where the front
end reads the same module, as ``tsf.plugins`` does).
"""

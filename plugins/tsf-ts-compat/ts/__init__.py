"""TorchServe's ``ts`` handler API, implemented on tsf (distribution ``tsf-ts-compat``).

Handlers written for TorchServe import from here unchanged; they run in tsf's workers and get
tsf's :class:`tsf.context.Context`.
"""

__version__ = "0.12.0"
TSF_COMPAT = True

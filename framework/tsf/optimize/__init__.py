"""``tsf optimize``: an archive turned into one that serves a faster form of its model.

``samples`` loads the archive's handler in this process and turns sample inputs (files as
clients send them) into model inputs with the handler's own preprocessing; ``forms`` exports
the model with a dynamic batch dimension (``torch.export``), quantizes it to int8 (PT2E with
torchao's ``X86InductorQuantizer``) and compiles it ahead of time (AOTInductor); ``measure``
times the model before and after and compares their outputs; ``command`` ties them together
and writes the new archive, whose ``.pt2`` the worker loads (:mod:`tsf.runtime.pt2`).

Imports torch (lazily: the command line imports this package only for ``tsf optimize``); may
import ``testing``, the worker layer and everything below it, never the front end.
"""

"""tsf: a plugin-based PyTorch model server.

Plugin authors import ``hookimpl`` from here::

    from tsf import hookimpl

    class MyHandler:
        @hookimpl
        def tsf_preprocess(self, context, requests): ...
"""

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "tsf"
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["hookimpl", "PROJECT_NAME", "__version__"]

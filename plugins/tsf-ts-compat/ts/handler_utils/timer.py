"""``timed``: records a handler method's duration as ``ts_handler_<method>`` (milliseconds).

Only when model-config.yaml says ``handler: {profile: true}``, as in TorchServe.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable


def _profiling(handler: Any) -> bool:
    context = getattr(handler, "context", None)
    config = getattr(context, "model_yaml_config", None) or {}
    section = config.get("handler") if isinstance(config, dict) else None
    return isinstance(section, dict) and bool(section.get("profile"))


def timed(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _profiling(self):
            return func(self, *args, **kwargs)
        import torch

        cuda = torch.cuda.is_available()
        start = time.perf_counter()
        result = func(self, *args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        self.context.metrics.add_time("ts_handler_" + func.__name__,
                                      (time.perf_counter() - start) * 1000)
        return result

    return wrapper

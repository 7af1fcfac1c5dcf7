"""Wrap every worker stage of every model and record how long it took."""

from __future__ import annotations

import time
from typing import Any

from tsf import hookimpl

METRIC = "contrib_stage_seconds"


def _timed(stage: str, context: Any):
    started = time.perf_counter()
    result = yield
    context.metrics.add_histogram(METRIC, time.perf_counter() - started,
                                  dimensions={"stage": stage})
    return result


@hookimpl(wrapper=True)
def tsf_preprocess(context: Any, requests: list) -> Any:
    return (yield from _timed("preprocess", context))


@hookimpl(wrapper=True)
def tsf_inference(context: Any, batch: Any) -> Any:
    return (yield from _timed("inference", context))


@hookimpl(wrapper=True)
def tsf_postprocess(context: Any, outputs: Any) -> Any:
    return (yield from _timed("postprocess", context))

"""Warm-up: inputs a model declares, run through its handler after the model loads and before
the worker reports READY, so the first user request does not pay for lazy initialisation.

In model-config.yaml::

    warmup:
      inputs: ["hello", {"data": [1, 2, 3]}]  # a string is sent as text/plain, anything else
                                              # as application/json
      file: warmup.json                       # more inputs: a JSON list, a file in the archive
      iterations: 3                           # times the whole list runs (default 1)

Each input is one request, answered by the handler like a user's.  An answer with an error
status, or a warm-up declaration that is not of this shape, fails the load (ModelLoadError).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..archives.reader import confined_path
from ..errors import ModelLoadError
from ..json_body import load_json
from ..workers.messages import Batch, Part, Request

log = logging.getLogger("tsf.worker")

MAX_ITERATIONS = 1000


def warmup_inputs(model_config: dict, model_dir: str) -> tuple[list[Any], int]:
    """The declared inputs and the number of iterations; ``([], 0)`` when none is declared."""
    declared = model_config.get("warmup")
    if declared is None:
        return [], 0
    if not isinstance(declared, dict):
        raise ModelLoadError("model-config warmup must be a mapping with inputs, file and "
                             "iterations")
    inputs = declared.get("inputs", [])
    if not isinstance(inputs, list):
        raise ModelLoadError("model-config warmup.inputs must be a list")
    inputs = list(inputs)
    if declared.get("file") is not None:
        name = declared["file"]
        if not isinstance(name, str):
            raise ModelLoadError("model-config warmup.file must be a file name")
        path = confined_path(Path(model_dir), name, "warmup.file", ModelLoadError)
        try:
            listed = load_json(path.read_bytes(), f"warm-up file {name}")
        except OSError as exc:
            raise ModelLoadError(f"warm-up file {name!r} cannot be read: {exc}") from None
        except Exception as exc:
            raise ModelLoadError(f"warm-up file {name!r}: {exc}") from None
        if not isinstance(listed, list):
            raise ModelLoadError(f"warm-up file {name!r} must hold a JSON list of inputs")
        inputs.extend(listed)
    iterations = declared.get("iterations", 1)
    if isinstance(iterations, bool) or not isinstance(iterations, int) \
            or not 1 <= iterations <= MAX_ITERATIONS:
        raise ModelLoadError(f"model-config warmup.iterations must be an integer from 1 to "
                             f"{MAX_ITERATIONS}, got {iterations!r:.50}")
    if not inputs:
        raise ModelLoadError("model-config warmup declares no inputs (inputs or file)")
    return inputs, iterations


def request_of(index: int, value: Any) -> Request:
    """One warm-up input as a request message."""
    if isinstance(value, str):
        ctype, body = "text/plain", value.encode()
    else:
        ctype, body = "application/json", json.dumps(value).encode()
    return Request(f"warmup-{index}", [Part("body", body, ctype)])


def run_warmup(runner: Any, model_config: dict, model_dir: str) -> int:
    """Run the declared warm-up through ``runner`` (a BatchRunner); the number of requests run.

    Raises ModelLoadError, naming the input, when one is answered with an error.
    """
    inputs, iterations = warmup_inputs(model_config, model_dir)
    started = time.monotonic()
    for _ in range(iterations):
        for index, value in enumerate(inputs):
            [answer] = runner.run(Batch([request_of(index, value)])).answers
            if answer.status >= 400:
                detail = answer.body.decode("utf-8", "replace")[:500]
                raise ModelLoadError(f"warm-up input {index} was answered with status "
                                     f"{answer.status}: {detail}")
    runs = len(inputs) * iterations
    if runs:
        log.info("warm-up: %d requests in %.3f s", runs, time.monotonic() - started)
    return runs

"""How the worker adapts TorchServe-style handlers: entry point rule, compiled models,
explanations, and the status of a handler's errors."""

from __future__ import annotations

import types

import pytest

from tsf.context import Context
from tsf.runtime.batch_runner import BatchRunner
from tsf.runtime.handler_resolver import FunctionHandler, TorchServeClassHandler, adapt_module


def _context() -> Context:
    ctx = Context(model_name="m", model_version="1", model_dir="/tmp", manifest={},
                  device="cpu")
    ctx.begin_batch(["r0"], [{"X-A": "1"}])
    return ctx


def _module(source: str) -> types.ModuleType:
    module = types.ModuleType("handler_under_test")
    exec(source, module.__dict__)
    return module


def test_module_level_handle_is_the_entry_point_beside_a_class():
    module = _module("class Helper:\n    def handle(self, data, context):\n        return 1\n"
                     "def handle(data, context):\n    return 2\n")
    adapted = adapt_module(module)
    assert isinstance(adapted, FunctionHandler) and adapted.function is module.handle


def test_a_single_class_without_module_handle_is_used():
    module = _module("class Only:\n    def handle(self, data, context):\n        return 1\n")
    assert isinstance(adapt_module(module), TorchServeClassHandler)


def test_a_compiled_model_is_returned_without_truth_testing_it():
    torch = pytest.importorskip("torch")

    class Handler:
        def initialize(self, context):
            self.model = torch.compile(torch.nn.Linear(2, 2), backend="eager")

        def handle(self, data, context):
            return data

    instance = Handler()
    assert TorchServeClassHandler(instance).tsf_load_model(_context()) is instance.model


def test_explain_runs_handle_with_the_explain_header():
    class Handler:
        def handle(self, data, context):
            return [context.get_request_header(0, "explain")]

    ctx = _context()
    assert TorchServeClassHandler(Handler()).tsf_explain(context=ctx, requests=[{}]) == ["True"]
    assert ctx.get_request_header(0, "x-a") == "1"
    seen = []
    function = FunctionHandler(lambda data, context: seen.append(
        context.get_request_header(0, "explain")) or ["ok"])
    assert function.tsf_explain(context=_context(), requests=[{}]) == ["ok"]
    assert seen == ["True"]


@pytest.mark.parametrize("error, status", [
    (MemoryError("host"), 507),
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"), 507),
    (type("OutOfMemoryError", (RuntimeError,), {})("cuda"), 507),
    (ValueError("bad"), 500),
])
def test_handler_errors_get_torchserves_status(error, status):
    runner = BatchRunner(pm=None, context=_context())
    assert runner._as_error(error).status == status

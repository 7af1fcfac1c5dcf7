"""tsf-ts-compat's ``ts`` API without a server: utilities, Context, metrics, pt2 options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import ts
from ts.handler_utils.text_utils import get_tokenizer, ngrams_iterator
from ts.handler_utils.timer import timed
from ts.handler_utils.utils import send_intermediate_predict_response
from ts.metrics.dimension import Dimension
from ts.metrics.metric_cache_errors import MetricsCacheKeyError
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import compile_options
from ts.utils.util import (PredictionException, list_classes_from_module, load_label_mapping,
                           map_class_to_label)

from tsf.context import Context
from tsf.errors import ModelLoadError, NotImplementedByModel, TsfError


def context(**kwargs) -> Context:
    ctx = Context(model_name="m", model_version="1.0", model_dir="/tmp", manifest={},
                  **kwargs)
    ctx.begin_batch(["a", "b"], [{"X-Color": "red"}, {}])
    return ctx


def test_the_ts_package_is_tsf_compat():
    assert ts.TSF_COMPAT and (Path(ts.__file__).parent / "TSF_COMPAT").is_file()
    from ts.context import Context as TsContext

    assert TsContext is Context


def test_prediction_exception_carries_its_status():
    exc = PredictionException("busy", 429)
    assert isinstance(exc, TsfError) and exc.status == 429 and exc.error_code == 429
    assert exc.to_dict() == {"code": 429, "type": "InternalServerException",
                             "message": "busy"}
    assert str(exc) == "busy : 429"
    assert PredictionException("x", 200).status == 500
    assert PredictionException("x", "nonsense").status == 500
    assert PredictionException("x").status == 500


def test_label_mapping_and_class_to_label(tmp_path):
    path = tmp_path / "index_to_name.json"
    assert load_label_mapping(str(path)) is None
    path.write_text(json.dumps({"0": ["n01", "tench"], "1": "goldfish"}))
    mapping = load_label_mapping(str(path))
    assert mapping == {"0": "tench", "1": "goldfish"}
    path.write_text(json.dumps({"object_type_names": ["bg", "person"]}))
    assert load_label_mapping(str(path)) == {"0": "bg", "1": "person"}
    assert map_class_to_label([[0.9, 0.1]], mapping) == [{"tench": 0.9, "goldfish": 0.1}]
    assert map_class_to_label([[0.7]], mapping, [[1]]) == [{"goldfish": 0.7}]
    assert map_class_to_label([[0.2, 0.8]]) == [{"0": 0.2, "1": 0.8}]
    with pytest.raises(TypeError):
        map_class_to_label("not a list")


def test_list_classes_from_module(tmp_path):
    import types

    module = types.ModuleType("handlers_mod")
    exec("import json\nclass A: pass\nclass B(A): pass\n", module.__dict__)
    assert [c.__name__ for c in list_classes_from_module(module)] == ["A", "B"]
    assert [c.__name__ for c in list_classes_from_module(module, module.B)] == ["B"]


def test_request_processor_and_response_status():
    ctx = context()
    assert ctx.request_processor[0].get_request_property("x-color") == "red"
    assert ctx.get_request_header(0, "X-COLOR") == "red"
    assert ctx.get_request_header(1, "x-color") is None
    assert ctx.get_response_status(0) == (200, None)
    ctx.request_processor[1].report_status(404, "Gone")
    ctx.set_response_status(202, "Later", idx=0)
    assert ctx.get_response_status(1) == (404, "Gone")
    assert ctx.response_settings(0)["status"] == 202
    ctx.set_all_response_status(503, "Busy")
    assert [ctx.get_response_status(i) for i in range(2)] == [(503, "Busy")] * 2


def test_system_properties_and_yaml_config():
    ctx = context(model_config={"handler": {"k": 1}}, batch_size=4, device="cpu")
    props = ctx.system_properties
    assert props["model_dir"] == "/tmp" and props["batch_size"] == 4 and props["gpu_id"] is None
    assert {"server_name", "server_version", "limit_max_image_pixels"} <= set(props)
    assert ctx.model_yaml_config == {"handler": {"k": 1}}


def test_metrics_api_records_what_torchserve_handlers_add():
    metrics = context().metrics
    rows = metrics.add_metric_to_cache("rows", "count", ["color"], MetricTypes.COUNTER)
    rows.add_or_update(2, ["red"])
    rows.add_or_update(1, ["red", "extra"])  # does not fit: dropped, as TorchServe does
    rows.add_or_update(-1, ["red"])  # a counter cannot go down: dropped
    assert metrics.get_metric("rows", MetricTypes.COUNTER) is rows
    with pytest.raises(MetricsCacheKeyError):
        metrics.get_metric("rows", MetricTypes.GAUGE)
    metrics.add_counter("hits", 3, None, [Dimension("path", "/x")])
    metrics.add_time("HandlerTime", 1.5, None, "ms")
    metrics.add_size("payload", 2, None, "kB", [Dimension("k", "v")])
    metrics.add_percent("share", 40.0, dimensions=[Dimension("k", "v")])
    metrics.add_metric("latency", 0.3, "ms", None, [Dimension("k", "v")], MetricTypes.HISTOGRAM)
    metrics.add_counter("legacy", 1, dimensions={"kind": "x"})
    with pytest.raises(ValueError):
        metrics.add_time("bad", 1, unit="minutes")
    with pytest.raises(ValueError):
        metrics.add_size("bad", 1, unit="TB")
    with pytest.raises(ValueError):
        metrics.add_metric_to_cache("bad", "count", metric_type="summary")
    assert metrics.drain() == [
        {"name": "rows", "kind": "counter", "value": 2.0, "labels": {"color": "red"}},
        {"name": "hits", "kind": "counter", "value": 3.0, "labels": {"path": "/x"}},
        {"name": "HandlerTime", "kind": "gauge", "value": 1.5, "labels": {}},
        {"name": "payload", "kind": "gauge", "value": 2.0, "labels": {"k": "v"}},
        {"name": "share", "kind": "gauge", "value": 40.0, "labels": {"k": "v"}},
        {"name": "latency", "kind": "histogram", "value": 0.3, "labels": {"k": "v"}},
        {"name": "legacy", "kind": "counter", "value": 1.0, "labels": {"kind": "x"}},
    ]
    assert metrics.drain() == []


def test_pt2_compile_options_follow_torchserve():
    assert compile_options({"compile": {"enable": True, "backend": "inductor",
                                        "mode": "reduce-overhead"}}) == \
        {"backend": "inductor", "mode": "reduce-overhead"}
    assert compile_options({"compile": {"enable": False, "backend": "inductor"}}) is None
    assert compile_options({"compile": {"enable": True}}) == {}
    assert compile_options("eager") == {"backend": "eager"}
    assert compile_options({"backend": "aot_eager"}) == {"backend": "aot_eager"}
    assert compile_options({"export": {"aot_compile": True}}) is None
    assert compile_options("no-such-backend") is None
    with pytest.raises(ModelLoadError):
        compile_options(3)


def test_basic_english_tokens_and_ngrams():
    tokenize = get_tokenizer("basic_english")
    assert tokenize("Hello, World! (it works)") == \
        ["hello", ",", "world", "!", "(", "it", "works", ")"]
    assert list(ngrams_iterator(["a", "b", "c"], 2)) == ["a", "b", "c", "a b", "b c"]
    assert list(ngrams_iterator(["a", "b", "c"], 3))[-1] == "a b c"
    assert get_tokenizer(None)("a b") == ["a", "b"]
    with pytest.raises(ValueError):
        get_tokenizer("spacy")


def test_intermediate_responses_need_tsf_support():
    class Streaming:
        def __init__(self):
            self.sent = []

        def send_intermediate_predict_response(self, ret, req_id_map, message, code):
            self.sent.append((ret, req_id_map, message, code))

    ctx = Streaming()
    send_intermediate_predict_response(["tok"], {0: "a"}, "Intermediate", 200, ctx)
    assert ctx.sent == [(["tok"], {0: "a"}, "Intermediate", 200)]
    with pytest.raises(NotImplementedByModel, match="stream"):
        send_intermediate_predict_response(["tok"], {0: "a"}, "m", 200, object())


def test_timed_records_handler_stage_times_when_profiling():
    class Handler:
        def __init__(self, profile):
            self.context = context(model_config={"handler": {"profile": profile}})

        @timed
        def preprocess(self, data):
            return data * 2

    quiet, loud = Handler(False), Handler(True)
    assert quiet.preprocess(2) == 4 and quiet.context.metrics.drain() == []
    assert loud.preprocess(3) == 6
    (record,) = loud.context.metrics.drain()
    assert record["name"] == "ts_handler_preprocess" and record["value"] >= 0


def test_torchserves_own_ts_is_refused(tmp_path):
    """A handler importing ts where ts is TorchServe's package gets a clear load error."""
    fake = tmp_path / "site" / "ts"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    handler = tmp_path / "h.py"
    handler.write_text("from ts.torch_handler.base_handler import BaseHandler\n")
    plain = tmp_path / "plain.py"
    plain.write_text("def handle(data, context):\n    return data\n")
    script = textwrap.dedent(f"""
        from pathlib import Path
        from tsf.errors import ModelLoadError
        from tsf.runtime.handler_resolver import check_ts_package
        check_ts_package(Path({str(plain)!r}))
        try:
            check_ts_package(Path({str(handler)!r}))
        except ModelLoadError as exc:
            print(exc)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(fake.parent)] + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "TorchServe's, not tsf-ts-compat's" in out.stdout


def test_metrics_declared_in_a_metrics_config_file(tmp_path):
    from tsf.errors import InternalError
    from tsf.runtime.handler_metrics import declared_metrics

    path = tmp_path / "metrics.yaml"
    path.write_text("dimensions:\n  - &model_name ModelName\nmodel_metrics:\n  counter:\n"
                    "    - name: Calls\n      unit: count\n      dimensions: [*model_name]\n"
                    "  gauge:\n    - name: Size\n      unit: kB\n      dimensions: []\n")
    declared = declared_metrics(str(path))
    assert declared == [
        {"name": "Calls", "unit": "count", "dimensions": ["ModelName"], "type": "counter"},
        {"name": "Size", "unit": "kB", "dimensions": [], "type": "gauge"}]
    metrics = context().metrics
    metrics.declare(declared)
    metrics.get_metric("Calls").add_or_update(1, ["m"])
    metrics.get_metric("Size", MetricTypes.GAUGE).add_or_update(3, [])
    assert [r["labels"] for r in metrics.drain()] == [{"ModelName": "m"}, {}]
    assert declared_metrics("") == []
    path.write_text("model_metrics:\n  summary:\n    - name: x\n")
    with pytest.raises(InternalError, match="metrics_config"):
        declared_metrics(str(path))

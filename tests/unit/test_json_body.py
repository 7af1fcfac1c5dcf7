"""The bounded JSON loader for client JSON; a worker fails one request at a time, never itself."""

from __future__ import annotations

import json

import pluggy
import pytest

from tsf.context import Context
from tsf.errors import BadRequest
from tsf.json_body import MAX_JSON_DEPTH, json_depth, json_object, load_json
from tsf.runtime import batch_runner
from tsf.runtime.batch_runner import BatchRunner
from tsf.workers.messages import Batch, Part, Request


@pytest.mark.parametrize("text, depth", [
    (b"1", 0), (b"[]", 1), (b"[[1], {\"a\": [2]}]", 3), (b'"[[["', 0),
    (b'["\\"[", [[]]]', 3), (b"[" * 5, 5), (b"{" * 3 + b"}" * 3, 3),
])
def test_json_depth_counts_brackets_outside_strings(text, depth):
    assert json_depth(text) == depth


@pytest.mark.parametrize("data", [
    b"[" * 1000 + b"]" * 1000, b"[" * 100_000, "[" * 5000, b'{"a":' * 1000 + b"1" + b"}" * 1000,
])
def test_too_deep_is_bad_request_never_recursion_error(data):
    with pytest.raises(BadRequest, match="nested more than"):
        load_json(data)


def test_at_the_limit_parses():
    value = load_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    for _ in range(MAX_JSON_DEPTH - 1):
        value = value[0]
    assert value == []


def test_many_brackets_shallow_parses_fast():
    rows = [[i, i + 1] for i in range(100_000)]
    assert load_json(json.dumps(rows).encode()) == rows


@pytest.mark.parametrize("data, message", [
    (b"{not json", "not valid JSON"), (b"\xff\xfe\xfa", "not valid JSON"),
    (b"1" * 5000, "not valid JSON"),
])
def test_invalid_json_is_bad_request(data, message):
    with pytest.raises(BadRequest, match=message):
        load_json(data, "body")


def test_json_object_requires_an_object():
    assert json_object(b'{"a": 1}') == {"a": 1}
    with pytest.raises(BadRequest, match="must be a JSON object"):
        json_object(b"[1]")


def _runner() -> BatchRunner:
    pm = pluggy.PluginManager("tsf")
    context = Context(model_name="m", model_version="1", model_dir=".", manifest={})
    return BatchRunner(pm, context)


@pytest.mark.parametrize("error", [RecursionError("deep"), MemoryError(), ValueError("odd")])
def test_any_decoding_failure_fails_that_request_alone(monkeypatch, error):
    def decode(part):
        if part.data == b"bad":
            raise error
        return part.data

    monkeypatch.setattr(batch_runner, "decode_part", decode)
    runner = _runner()

    def stages(kind, requests, messages, clock):
        runner.context.begin_batch([m.id for m in messages], [{}] * len(messages),
                                   [{}] * len(messages), ["torchserve"] * len(messages))
        return [r["body"] for r in requests]

    runner._stages = stages
    good, bad = runner.run(Batch([Request(i, [Part("body", data, "x")])
                                  for i, data in (("a", b"good"), ("b", b"bad"))])).answers
    assert good.status == 200 and good.body == b"good"
    assert bad.status == 400
    assert "request b" in json.loads(bad.body)["message"]


def test_deep_json_part_is_bad_request_in_the_worker():
    with pytest.raises(BadRequest, match="nested"):
        batch_runner.decode_part(Part("body", b"[" * 1000, "application/json"))


@pytest.mark.parametrize("error, status", [(RecursionError("deep"), 500), (MemoryError(), 507),
                                           (KeyError("k"), 500)])
def test_any_exception_while_running_one_request_fails_that_request_alone(error, status):
    runner = _runner()

    def stages(kind, requests, messages, clock):
        runner.context.begin_batch([m.id for m in messages], [{}] * len(messages),
                                   [{}] * len(messages), ["torchserve"] * len(messages))
        if any(r["body"] == b"bad" for r in requests):
            raise error
        return [r["body"] for r in requests]

    runner._stages = stages
    answers = runner.run(Batch([Request(i, [Part("body", data, "x")])
                                for i, data in zip("abc", (b"good", b"bad", b"fine"))])).answers
    assert [a.status for a in answers] == [200, status, 200]  # 507: as TorchServe
    assert answers[0].body == b"good" and answers[2].body == b"fine"
    assert json.loads(answers[1].body)["type"] == ("OutOfResourcesException" if status == 507
                                                   else "HandlerException")

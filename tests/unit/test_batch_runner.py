"""BatchRunner in process, through tsf.testing.HandlerHarness: decoding, stage hooks, the
one-bad-request isolation retry, and result encoding - the worker's logic without a worker."""

from __future__ import annotations

import json

import pytest

from tsf import hookimpl
from tsf.errors import BadRequest
from tsf.testing import HandlerHarness


class Recorder:
    """Echoes what each stage received and how many requests shared each call."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    @hookimpl
    def tsf_load_model(self, context):
        return "recorder"

    @hookimpl
    def tsf_preprocess(self, context, requests):
        self.batches.append(len(requests))
        for i, request in enumerate(requests):
            if request.get("body") == "bad":
                raise BadRequest(f"request {context.get_request_id(i)}: bad input")
        return requests

    @hookimpl
    def tsf_inference(self, context, batch):
        return batch

    @hookimpl
    def tsf_postprocess(self, context, outputs):
        answers = []
        for i, request in enumerate(outputs):
            body = request.get("body")
            if body == "raw":
                answers.append(b"\x00\x01")
            elif body == "text":
                answers.append("plain words")
            elif body == "teapot":
                context.set_response_status(418, "teapot", i)
                context.set_response_header(i, "X-Pot", "tea")
                answers.append("short and stout")
            else:
                answers.append({"type": type(body).__name__, "body": body
                                if not isinstance(body, bytes) else body.hex()})
        return answers


@pytest.fixture
def recorder(tmp_path):
    handler = Recorder()
    return handler, HandlerHarness(tmp_path, handler)


def test_parts_are_decoded_by_content_type(recorder):
    _, harness = recorder
    answers = harness.run([{"a": [1, 2]}, "hello", b"\xff\x00"])
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[0].json() == {"type": "dict", "body": {"a": [1, 2]}}
    assert answers[1].json() == {"type": "str", "body": "hello"}
    assert answers[2].json() == {"type": "bytes", "body": "ff00"}


def test_results_are_encoded_by_type_and_keep_handler_status(recorder):
    _, harness = recorder
    raw, text, pot = harness.run(["raw", "text", "teapot"])
    assert (raw.status, raw.content_type, raw.body) == (200, "application/octet-stream",
                                                        b"\x00\x01")
    assert text.content_type.startswith("text/plain") and text.text == "plain words"
    assert pot.status == 418 and pot.headers == {"X-Pot": "tea"}


def test_one_bad_request_fails_alone_after_the_batch_is_retried_one_by_one(recorder):
    handler, harness = recorder
    answers = harness.run(["good", "bad", "good"])
    assert [a.status for a in answers] == [200, 400, 200]
    assert "bad input" in answers[1].json()["message"]
    assert answers[1].json()["type"] == "BadRequestException"
    # the whole batch first, then each request alone
    assert handler.batches == [3, 1, 1, 1]


def test_invalid_json_fails_only_its_request(recorder):
    _, harness = recorder
    good, bad = harness.run([[1], b"{not json"], content_type="application/json")
    assert good.status == 200
    assert bad.status == 400 and "not valid JSON" in bad.json()["message"]


class WrongCount:
    @hookimpl
    def tsf_load_model(self, context):
        return "wrong"

    @hookimpl
    def tsf_preprocess(self, context, requests):
        return requests

    @hookimpl
    def tsf_inference(self, context, batch):
        return batch

    @hookimpl
    def tsf_postprocess(self, context, outputs):
        return [1, 2, 3]


def test_a_handler_breaking_one_result_per_request_gets_a_clear_error(tmp_path):
    [answer] = HandlerHarness(tmp_path, WrongCount()).run(["x"])
    assert answer.status == 500
    assert "one result per request" in answer.json()["message"]


def test_explain_without_an_explainer_is_501(recorder):
    _, harness = recorder
    [answer] = harness.run(["x"], kind="explain")
    assert answer.status == 501 and answer.json()["type"] == "NotImplementedException"


def test_handler_files_resolve_from_the_model_folder(tmp_path):
    (tmp_path / "hello.py").write_text(
        "def handle(data, context):\n"
        "    if data is None:\n        return None\n"
        "    return [f'hello {row.get(\"body\")}' for row in data]\n")
    answers = HandlerHarness(tmp_path, "hello.py").run(["ada", "bob"])
    assert [a.text for a in answers] == ["hello ada", "hello bob"]


def test_base_handler_batches_json_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.jit.script(torch.nn.Linear(4, 2))
    model.save(str(tmp_path / "linear.pt"))
    manifest = {"runtime": "python", "model": {"modelName": "linear", "modelVersion": "1.0",
                                               "serializedFile": "linear.pt", "handler": ""}}
    harness = HandlerHarness(tmp_path, "base", manifest=manifest)
    rows = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]
    answers = harness.run(rows)
    with torch.no_grad():
        expected = model(torch.tensor(rows)).tolist()
    assert [a.status for a in answers] == [200, 200]
    for answer, row in zip(answers, expected):
        assert answer.json() == pytest.approx(row, abs=1e-5)
    assert json.loads(answers[0].body) != json.loads(answers[1].body)

"""OpenAI request bodies checked into generation requests (the front end's and the worker's
check), and OpenAI's answer and error shapes."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from tsf.errors import ModelNotFound, ServiceUnavailable
from tsf.generation.request import CHAT, COMPLETION, EMBEDDING, InvalidRequest, parse_request
from tsf.openai_api import spec


def test_a_chat_body_becomes_a_request_and_survives_the_trip_to_the_worker():
    body = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": [
                                           {"type": "text", "text": "hi "},
                                           {"type": "text", "text": "there"}]}],
            "max_completion_tokens": 9, "temperature": 0, "top_p": 0.5, "seed": 3,
            "stop": "\n", "n": 2, "stream": True, "stream_options": {"include_usage": True},
            "user": "ignored", "response_format": {"type": "text"}}
    request = parse_request(body, CHAT)
    assert request.messages[1] == {"role": "user", "content": "hi there"}
    assert (request.params.max_tokens, request.params.greedy, request.params.stop,
            request.n, request.include_usage, request.choices) == (9, True, ["\n"], 2, True, 2)
    again = parse_request(json.loads(request.to_json()))  # as the worker reads it
    assert again == request


def test_prompts_of_every_shape_and_the_kind_from_the_body():
    assert parse_request({"prompt": "x"}).prompts == ["x"]
    assert parse_request({"prompt": [1, 2, 3]}).prompts == [[1, 2, 3]]
    assert parse_request({"prompt": ["a", [4, 5]], "n": 3}).choices == 6
    assert parse_request({"messages": [{"role": "user", "content": "x"}]}).kind == CHAT
    assert parse_request({"input": ["a", "b"]}).kind == EMBEDDING
    assert parse_request({"prompt": "x"}).kind == COMPLETION


@pytest.mark.parametrize("body, param", [
    ([], None),
    ({"messages": {"role": "user"}}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}, "hi"]}, "messages[1]"),
    ({"messages": [{"role": None, "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [1.5]}, "prompt"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": True}, "max_tokens"),
    ({"prompt": "x", "temperature": 2.5}, "temperature"),
    ({"prompt": "x", "temperature": float("nan")}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "n": 17}, "n"),
    ({"prompt": ["a"] * 9, "n": 2}, "n"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "min_tokens": 5, "max_tokens": 2}, "min_tokens"),
    ({"prompt": "x", "presence_penalty": 1}, "presence_penalty"),
    ({"prompt": "x", "logprobs": True}, "logprobs"),
    ({"prompt": "x", "model": 7}, "model"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "x", "dimensions": 8}, "dimensions"),
    ({"tsf_kind": "speech"}, "tsf_kind"),
])
def test_bad_bodies_are_refused_naming_the_field(body, param):
    with pytest.raises(InvalidRequest) as caught:
        parse_request(body)
    assert caught.value.status == 400
    assert caught.value.param == param


def test_errors_have_openai_body_beside_tsfs_own():
    error = InvalidRequest("too long", "prompt", "context_length_exceeded")
    body = spec.error_body(error)
    assert body["error"] == {"message": "too long", "type": "invalid_request_error",
                             "param": "prompt", "code": "context_length_exceeded"}
    assert (body["code"], body["type"]) == (400, "BadRequestException")
    assert spec.error_body(ModelNotFound("no m"))["error"]["code"] == "model_not_found"
    assert spec.error_body(ServiceUnavailable("full"))["error"]["type"] == "server_error"
    # an error the worker answered keeps the field it named
    rebuilt = spec.answer_error(400, json.dumps(error.to_dict()).encode())
    assert spec.error_body(rebuilt)["error"]["param"] == "prompt"
    assert spec.answer_error(500, b"not json").status == 500


def test_a_stream_is_chunks_with_one_id_then_finish_usage_and_done():
    request = parse_request({"messages": [{"role": "user", "content": "x"}], "n": 2,
                             "stream": True, "stream_options": {"include_usage": True}}, CHAT)
    completion = spec.Completion(request, "abc", "m")
    answer = {"choices": [{"index": 0, "finish_reason": "stop", "token_ids": [5]},
                          {"index": 1, "finish_reason": "length", "token_ids": [6, 7]}],
              "usage": {"prompt_tokens": 4, "completion_tokens": 3}}
    raw = completion.opening() + completion.text_chunk(1, "hé") + completion.closing(answer)
    events = [e for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {"chatcmpl-abc"}
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": ""}, {"role": "assistant", "content": ""},
        {"content": "hé"}]
    assert [c["choices"][0]["finish_reason"] for c in chunks[3:5]] == ["stop", "length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7
    assert all(c["usage"] is None for c in chunks[:-1])


def test_embeddings_as_floats_or_base64_float32():
    answer = {"data": [[0.5, -1.25]], "usage": {"prompt_tokens": 3}}
    floats = spec.embeddings(answer, "m", "float")
    assert floats["data"][0]["embedding"] == [0.5, -1.25]
    packed = spec.embeddings(answer, "m", "base64")["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == (0.5, -1.25)
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}

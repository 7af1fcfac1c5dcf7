"""The warm-up declaration in model-config.yaml: inputs, file, iterations and their errors."""

from __future__ import annotations

import pytest

from tsf.errors import ModelLoadError
from tsf.runtime.warmup import request_of, warmup_inputs


def test_no_declaration_means_no_warm_up(tmp_path):
    assert warmup_inputs({}, str(tmp_path)) == ([], 0)


def test_inputs_and_file_are_joined_and_iterations_kept(tmp_path):
    (tmp_path / "w.json").write_text('[{"a": 1}, "b"]')
    assert warmup_inputs({"warmup": {"inputs": ["x"], "file": "w.json", "iterations": 3}},
                         str(tmp_path)) == (["x", {"a": 1}, "b"], 3)


@pytest.mark.parametrize("declared, text", [
    ("yes", "must be a mapping"), ({"inputs": "x"}, "must be a list"), ({}, "no inputs"),
    ({"inputs": ["x"], "iterations": 0}, "from 1 to"),
    ({"inputs": ["x"], "iterations": True}, "from 1 to"),
    ({"file": "../outside.json"}, "outside the model's folder"),
    ({"file": "missing.json"}, "cannot be read"), ({"file": "bad.json"}, "JSON"),
    ({"file": "obj.json"}, "JSON list"),
])
def test_a_bad_declaration_fails_the_load_with_the_reason(tmp_path, declared, text):
    (tmp_path / "bad.json").write_text("[1,")
    (tmp_path / "obj.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=text):
        warmup_inputs({"warmup": declared}, str(tmp_path))


def test_strings_are_text_and_other_values_json():
    assert request_of(0, "hi").parts[0].ctype == "text/plain"
    request = request_of(2, {"a": [1]})
    [part] = request.parts
    assert part.ctype == "application/json" and part.data == b'{"a": [1]}'
    assert request.id == "warmup-2"

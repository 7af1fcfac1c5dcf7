"""config.properties read as Java's Properties reads it (TorchServe's multi-line ``models``),
and written so that reading it back gives the same values."""

from __future__ import annotations

import json

from tsf.config.properties import format_properties, parse_properties, read_properties

# docs/configuration.md of TorchServe, "Config model", as users paste it
TORCHSERVE_MODELS = r"""
# per-model settings
models={\
  "noop": {\
    "1.0": {\
        "defaultVersion": true,\
        "marName": "noop.mar",\
        "minWorkers": 1,\
        "maxWorkers": 1,\
        "batchSize": 4,\
        "maxBatchDelay": 100,\
        "responseTimeout": 120\
    }\
  }\
}
inference_address=http://127.0.0.1:8080
"""


def test_continued_lines_join_into_one_value():
    values = parse_properties(TORCHSERVE_MODELS)
    assert values["inference_address"] == "http://127.0.0.1:8080"
    models = json.loads(values["models"])
    assert models["noop"]["1.0"]["batchSize"] == 4 and models["noop"]["1.0"]["defaultVersion"]


def test_separators_comments_and_escapes():
    values = parse_properties(
        "! a comment\n  # another\n\nplain=1\ncolon: 2\nspaced   3\nempty=\n"
        "key\\ with\\ blanks = x\nescaped=a\\=b\\:c\\#d\\!e\\\\f\\tg\\u00e9\n"
        "regex=https://models\\.example\\.com/.*\ncrlf=1\r\nlast=yes\\\n   continued\n")
    assert values == {"plain": "1", "colon": "2", "spaced": "3", "empty": "",
                      "key with blanks": "x", "escaped": "a=b:c#d!e\\f\tg\u00e9",
                      "regex": "https://models\\.example\\.com/.*", "crlf": "1",
                      "last": "yescontinued"}


def test_a_later_key_wins():
    assert parse_properties("a=1\na=2\n") == {"a": "2"}


def test_written_values_read_back_the_same(tmp_path):
    values = {"model_snapshot": json.dumps({"models": {"m": {"1.0": {"marName": "m.mar"}}}}),
              "odd key": " leading blank, = : # ! \\ and\nnew line", "plain": "x"}
    text = format_properties(values, comments=("Saving snapshot",))
    assert text.startswith("#Saving snapshot\n")
    assert "model_snapshot={\"models\"\\:" in text  # TorchServe's readers expect \:
    path = tmp_path / "out.properties"
    path.write_text(text)
    assert read_properties(path) == values

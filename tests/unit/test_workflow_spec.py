"""Workflow spec validation and the .war archiver/reader, without a server."""

from __future__ import annotations

import json
import zipfile

import pytest

from tsf.archives.reader import Limits
from tsf.errors import BadRequest, InvalidArchive
from tsf.workflows.spec import handler_functions, parse_spec
from tsf.workflows.war import WAR_MANIFEST, WarSpec, open_war, write_war

HANDLER = "def pre(data, context):\n    return data\n\ndef post(data, context):\n    return data\n"


def spec(**dag):
    return {"models": {"batch-size": 4, "timeout-ms": 2500, "m1": {"url": "m1.mar"},
                       "m2": {"url": "m2.mar", "batch-size": 2, "retry-attempts": 0}},
            "dag": dag or {"pre": ["m1", "m2"], "m1": ["post"], "m2": ["post"]}}


def test_parallel_dag_is_ordered_with_settings_merged():
    parsed = parse_spec(spec(), {"pre", "post"})
    assert parsed.order[0] == "pre" and parsed.order[-1] == "post"
    assert parsed.parents["post"] == ["m1", "m2"]
    assert parsed.leaves == ["post"]
    assert parsed.nodes["m1"].settings.batch_size == 4
    assert parsed.nodes["m2"].settings.batch_size == 2
    assert parsed.nodes["m2"].settings.retry_attempts == 0
    assert parsed.nodes["m1"].settings.response_timeout == 3
    assert not parsed.nodes["pre"].is_model and parsed.nodes["m1"].url == "m1.mar"
    assert parsed.dag_text() == "{pre=[m1, m2], m1=[post], m2=[post]}"


@pytest.mark.parametrize("dag, functions, words", [
    ({"pre": ["missing"]}, {"pre"}, "'missing'"),
    ({"pre": ["m1"], "m1": ["m2"], "m2": ["m1"]}, {"pre"}, "cycle"),
    ({"pre": ["m1"], "m2": ["post"]}, {"pre", "post"}, "exactly one start"),
    ({"pre": ["m1"]}, {"pre"}, "not in the dag"),
])
def test_bad_dags_are_refused_naming_the_node(dag, functions, words):
    with pytest.raises(BadRequest, match=words):
        parse_spec(spec(**dag), functions)


def test_bad_settings_and_models_are_refused():
    with pytest.raises(BadRequest, match="batch-size"):
        parse_spec({"models": {"batch-size": "x"}, "dag": {"pre": []}}, {"pre"})
    with pytest.raises(BadRequest, match="model 'm1' needs a 'url'"):
        parse_spec({"models": {"m1": {}}, "dag": {"m1": []}}, set())
    with pytest.raises(BadRequest, match="neither a model"):
        parse_spec({"dag": {"pre": []}}, set())


def test_handler_functions_are_read_without_importing():
    assert handler_functions("import torch_that_is_absent\n" + HANDLER) == {"pre", "post"}
    with pytest.raises(BadRequest, match="does not parse"):
        handler_functions("def (:")


def test_written_war_reads_back_and_hostile_wars_are_refused(tmp_path):
    (tmp_path / "spec.yaml").write_text(json.dumps(spec()))
    (tmp_path / "handler.py").write_text(HANDLER)
    out = write_war(WarSpec("flow", str(tmp_path / "spec.yaml"), str(tmp_path / "handler.py"),
                            export_path=str(tmp_path / "out")))
    with pytest.raises(BadRequest, match="already exists"):
        write_war(WarSpec("flow", str(tmp_path / "spec.yaml"), str(tmp_path / "handler.py"),
                          export_path=str(tmp_path / "out")))
    workspace = tmp_path / "ws"
    archive = open_war(out, workspace, Limits())
    assert archive.name == "flow" and archive.handler == "handler.py"
    assert archive.spec.order[0] == "pre"
    archive.remove_files()
    assert list(workspace.iterdir()) == []

    evil = tmp_path / "evil.war"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr(WAR_MANIFEST, json.dumps({"workflow": {
            "workflowName": "evil", "specFile": "../../etc/passwd", "handler": "h.py"}}))
    with pytest.raises(InvalidArchive, match="outside"):
        open_war(evil, workspace, Limits())
    bomb = tmp_path / "bomb.war"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 2_000_000)
    with pytest.raises(InvalidArchive, match="bomb|more than"):
        open_war(bomb, workspace, Limits(max_bytes=1_000_000))
    assert list(workspace.iterdir()) == []

"""``tsf check-archive``: loads the handler in a real worker, runs one request, reports gaps."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tsf.archives.writer import ArchiveSpec, write_archive

pytestmark = pytest.mark.slow

GOOD = '''
    from ts.utils.util import PredictionException

    def handle(data, context):
        if data is None:
            return None
        body = data[0].get("body")
        if body == b"teapot":
            raise PredictionException("short and stout", 418)
        return [f"checked {body.decode()}"]
'''
MISSING = '''
    import not_a_module_anyone_has

    def handle(data, context):
        return data
'''


def _archive(tmp_path, name: str, source: str) -> str:
    handler = tmp_path / f"{name}.py"
    handler.write_text(textwrap.dedent(source))
    return write_archive(ArchiveSpec(model_name=name, handler=str(handler),
                                     export_path=str(tmp_path)))


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsf.cli", "check-archive", *args],
                          capture_output=True, text=True, timeout=300)


def test_a_good_archive_loads_and_answers(tmp_path):
    mar = _archive(tmp_path, "good", GOOD)
    data = tmp_path / "req.txt"
    data.write_bytes(b"tea")
    out = _check(str(mar), "--data", str(data), "--json")
    assert out.returncode == 0, out.stderr + out.stdout
    report = json.loads(out.stdout)
    assert report["loaded"] and report["imports_ts"] and report["missing"] == []
    assert report["response"] == {"status": 200, "content_type": "text/plain; charset=utf-8",
                                  "body": "checked tea"}
    data.write_bytes(b"teapot")
    failing = _check(str(mar), "--data", str(data))
    assert failing.returncode == 1 and "response: 418" in failing.stdout
    assert "short and stout" in failing.stdout


def test_a_missing_module_is_named(tmp_path):
    out = _check(str(_archive(tmp_path, "missing", MISSING)))
    assert out.returncode == 1
    assert "loaded:   no" in out.stdout
    assert "missing:  the Python module 'not_a_module_anyone_has'" in out.stdout


def test_a_missing_archive_is_reported(tmp_path):
    out = _check(str(tmp_path / "nowhere.mar"))
    assert out.returncode == 1 and "No such file" in out.stdout and not out.stderr

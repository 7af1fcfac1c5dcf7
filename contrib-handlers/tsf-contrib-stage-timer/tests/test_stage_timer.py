"""The plugin, loaded through its entry point, wraps the stages of a real model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tsf.archives.writer import ArchiveSpec, write_archive

HANDLER = '''
    def handle(data, context):
        if data is None:
            return None
        return [len(row.get("body") or b"") for row in data]
'''


def test_stage_times_reach_metrics(tsf_server, tmp_path):
    (tmp_path / "h.py").write_text(textwrap.dedent(HANDLER))
    write_archive(ArchiveSpec(model_name="timed", handler=str(tmp_path / "h.py"),
                              export_path=str(tmp_path / "store")))
    server = tsf_server(model_store=tmp_path / "store", models=["timed=timed.mar"])
    assert server.register("timed.mar", model_name="timed2").status_code == 200
    response = server.post("/predictions/timed2", data=b"abcd")
    assert response.status_code == 200 and response.json() == 4
    text = server.scrape()
    counts = [line for line in text.splitlines()
              if line.startswith("contrib_stage_seconds_count{") and 'model_name="timed2"' in line]
    assert {s for line in counts for s in ("preprocess", "inference", "postprocess")
            if f'stage="{s}"' in line} == {"preprocess", "inference", "postprocess"}


def test_disabled_by_env(tsf_server, tmp_path):
    (tmp_path / "h.py").write_text(textwrap.dedent(HANDLER))
    write_archive(ArchiveSpec(model_name="plain", handler=str(tmp_path / "h.py"),
                              export_path=str(tmp_path / "store")))
    server = tsf_server(model_store=tmp_path / "store",
                        env={"TSF_DISABLE_PLUGINS": "stage_timer"})
    assert server.register("plain.mar").status_code == 200
    assert server.post("/predictions/plain", data=b"ab").json() == 2
    assert "contrib_stage_seconds" not in server.scrape()


def test_listed_by_tsf_plugins():
    out = subprocess.run([sys.executable, "-m", "tsf.cli", "plugins"], capture_output=True,
                         text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("stage_timer"))
    assert "tsf_inference" in line and "0.1.0" in line

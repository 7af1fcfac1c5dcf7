"""``tsf monitor report`` on a real server's captured predictions and feedback, rendered in
headless Chromium with name resolution off: the page shows the drifted feature and the biased
group."""

from __future__ import annotations

import datetime
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess

HANDLER = '''
    import json

    def handle(data, context):
        if data is None:
            return None
        out = []
        for row in data:
            body = row["body"]
            body = json.loads(body) if isinstance(body, (bytes, bytearray)) else body
            out.append({"label": int(body["x"] > 0.5 or body["region"] == "b")})
        return out
'''


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("chromium is not installed (make setup installs Debian's chromium)")


def rendered_text(html: str, profile: str) -> str:
    """The page's text once its scripts ran, from ``chromium --dump-dom``."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",
               f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom",
               f"file://{html}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        dom, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = re.sub(rb"<(script|style)\b.*?</\1>", b"", dom, flags=re.S)
    text = re.sub(rb"<[^>]+>", b"|", text)
    return re.sub(r"\|[\s|]*", "|", text.decode("utf-8", "replace"))


def send(server: ServerProcess, rows: list[dict]) -> list[str]:
    ids = []
    for row in rows:
        r = server.post("/predictions/loans", json=row)
        assert r.status_code == 200, r.text
        ids.append(r.headers["X-Request-Id"])
    return ids


def test_report_renders_offline_with_the_drifted_feature_and_groups(tmp_path):
    src, store = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    store.mkdir()
    (src / "h.py").write_text(textwrap.dedent(HANDLER))
    (src / "config.yaml").write_text(yaml.safe_dump({"capture": {"groups": ["region"]}}))
    write_archive(ArchiveSpec(model_name="loans", handler=str(src / "h.py"),
                              config_file=str(src / "config.yaml"), export_path=str(store)))
    rng = random.Random(0)

    def rows(n: int, z_shift: float) -> list[dict]:
        return [{"x": rng.random(), "z": rng.gauss(z_shift, 1), "region": rng.choice("ab")}
                for _ in range(n)]

    server = ServerProcess(model_store=store, models=["loans=loans.mar"])
    try:
        send(server, rows(150, 0.0))
        time.sleep(1.1)
        since = datetime.datetime.now(datetime.timezone.utc).isoformat()
        current = rows(150, 3.0)  # z moves; x, the label's cause, does not
        ids = send(server, current)
        feedback = [{"id": i, "label": int(row["x"] > 0.5), "groups": {"region": row["region"]}}
                    for i, row in zip(ids, current)]
        assert server.post("/feedback/loans", json=feedback).status_code == 200
        workspace = server.workdir / "workspace"
        output = tmp_path / "report.html"
        result = subprocess.run(
            [sys.executable, "-m", "tsf.cli", "monitor", "report", "--model", "loans",
             "--since", since, "--workspace", str(workspace), "-o", str(output)],
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "150 current rows, 150 reference rows" in result.stdout
    finally:
        server.stop()
    html = output.read_text()
    assert "<script src" not in html and "<link " not in html  # self-contained
    text = rendered_text(str(output), str(tmp_path / "profile"))
    assert "Drifted features: z" in text, text[:2000]
    assert "|z|num|Detected|" in text and "|x|num|Not Detected|" in text
    assert "Classification quality: 150 labelled rows" in text
    group = re.search(r"Group region \(positive class 1\)[^|]*\|.*?\|b\|(\d+)\|(\d+)\|(\d+)\|"
                      r"([0-9.]+)\|([0-9.]+)\|", text)
    assert group is not None, text[-3000:]
    assert group.group(5) == "1.000"  # every negative of region b is predicted positive
    assert re.search(r"\|a\|\d+\|\d+\|\d+\|[0-9.]+\|0\.000\|", text)


def test_report_refuses_without_data(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tsf.cli", "monitor", "report", "--model", "none", "--since",
         "1h", "--workspace", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no monitoring store" in result.stderr

"""Archives through a real server: hostile ones are refused, torch-model-archiver's load unchanged."""

from __future__ import annotations

import io
import json
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from tsf.testing import ServerProcess, assert_error

MANIFEST = json.dumps({"runtime": "python", "model": {"modelName": "x", "modelVersion": "1.0",
                                                      "handler": "h.py"}})


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MAR-INF/MANIFEST.json", MANIFEST)
        for info, data in entries:
            zf.writestr(info, data)


def _symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("hostile")
    _zip(store / "zipslip.mar", [("../../escaped.txt", b"owned")])
    _zip(store / "absolute.mar", [("/tmp/tsf-absolute-escape.txt", b"owned")])
    _zip(store / "symlink.mar", [_symlink_entry("link", "/etc/passwd")])
    _zip(store / "bomb.mar", [("zeros.bin", b"\0" * (8 * 1024 * 1024))])
    _zip(store / "many.mar", [(f"f{i}.txt", b"x") for i in range(60)])
    (store / "corrupt.mar").write_bytes(b"PK\x03\x04" + b"\x00garbage" * 100)
    (store / "notanarchive.mar").write_bytes(b"hello, I am text")
    with tarfile.open(store / "tarlink.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("model/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with tarfile.open(store / "tarslip.tar.gz", "w:gz") as tf:
        data = b"owned"
        info = tarfile.TarInfo("../tar-escaped.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return store


@pytest.fixture(scope="module")
def server(hostile_store):
    server = ServerProcess(model_store=hostile_store,
                           config={"max_archive_size": 1024 * 1024, "max_archive_files": 50})
    yield server
    server.stop()


@pytest.mark.parametrize("name,text", [
    ("zipslip.mar", "escapes"), ("absolute.mar", "absolute"), ("symlink.mar", "symbolic link"),
    ("bomb.mar", "bytes"), ("many.mar", "entries"), ("corrupt.mar", "corrupt"),
    ("notanarchive.mar", "neither"), ("tarlink.tar.gz", "link"), ("tarslip.tar.gz", "escapes"),
])
def test_hostile_archive_is_refused_and_nothing_escapes(server, hostile_store, name, text):
    body = assert_error(server.register(name), 400, "InvalidModelArchiveException")
    assert text in body["message"], body
    workspace = server.workdir / "workspace"
    for escaped in (hostile_store.parent / "escaped.txt", workspace / "tar-escaped.txt",
                    workspace.parent / "escaped.txt", Path("/tmp/tsf-absolute-escape.txt")):
        assert not escaped.exists(), escaped
    leftovers = [p for p in (workspace / "models").glob("*")] if (workspace / "models").exists() \
        else []
    assert leftovers == [], leftovers
    assert server.get("/ping").json() == {"status": "Healthy"}


TS_HANDLER = '''
    import json
    import os

    import torch


    class TorchScriptHandler:
        """Written for TorchServe: loads the serialized file itself in initialize()."""

        def initialize(self, context):
            model_dir = context.system_properties.get("model_dir")
            serialized = context.manifest["model"]["serializedFile"]
            self.model = torch.jit.load(os.path.join(model_dir, serialized))
            self.model.eval()

        def handle(self, data, context):
            rows = []
            for row in data:
                body = row.get("data") or row.get("body")
                if isinstance(body, (bytes, bytearray)):
                    body = json.loads(body)
                rows.append(body)
            with torch.no_grad():
                out = self.model(torch.tensor(rows, dtype=torch.float32))
            return out.tolist()
'''


@pytest.mark.parametrize("fmt,suffix", [("default", ".mar"), ("tgz", ".tar.gz"),
                                        ("no-archive", "")])
def test_torch_model_archiver_output_serves_unchanged(tmp_path, fmt, suffix):
    import torch

    archiver = shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent))
    assert archiver, "torch-model-archiver is installed by the test setup"
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    torch.jit.script(model).save(str(tmp_path / "net.pt"))
    (tmp_path / "handler.py").write_text(textwrap.dedent(TS_HANDLER))
    (tmp_path / "labels.json").write_text('{"0": "a", "1": "b"}')
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run([archiver, "--model-name", "tma", "--version", "3.1",
                    "--serialized-file", str(tmp_path / "net.pt"),
                    "--handler", str(tmp_path / "handler.py"),
                    "--extra-files", str(tmp_path / "labels.json"),
                    "--archive-format", fmt, "--export-path", str(store)], check=True)
    assert (store / f"tma{suffix}").exists()
    server = ServerProcess(model_store=store)
    try:
        r = server.register(f"tma{suffix}")
        assert r.status_code == 200, r.text
        assert "Version: 3.1" in r.json()["status"]
        x = [0.5, -1.0, 2.0, 0.25]
        response = server.post("/predictions/tma", json=x)
        assert response.status_code == 200, response.text
        expected = model(torch.tensor([x])).tolist()[0]
        assert response.json() == pytest.approx(expected, abs=1e-5)
    finally:
        server.stop()

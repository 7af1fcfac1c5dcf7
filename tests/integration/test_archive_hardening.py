"""Hostile and broken archives through a real server: precise 400s and nothing left on disk.

Covers: refused archives leave no folder or download behind, a tar bomb is refused before it is
written, manifest paths are confined to the model's folder, YAML alias bombs, odd manifests and
names, and unregistering a model while its workers load.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import re
import tarfile
import threading
import time
import warnings
import zipfile
from pathlib import Path

import psutil
import pytest

from tsf.testing import ServerProcess, assert_error

LIMIT = 1024 * 1024  # max_archive_size of the test server

GOOD_HANDLER = """
def handle(data, context):
    if data is None:
        return None
    return ["ok" for _ in data]
"""

FAILING_HANDLER = """
def handle(data, context):
    raise RuntimeError("this model cannot load")
"""

SLOW_HANDLER = """
import time

def handle(data, context):
    if data is None:
        time.sleep(6)
        return None
    return ["ok" for _ in data]
"""

BILLION_LAUGHS = "\n".join(
    ["minWorkers: 1", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]) + "\n"


def manifest(**model) -> str:
    return json.dumps({"runtime": "python",
                       "model": {"modelName": "m", "modelVersion": "1.0", **model}})


def write_mar(path: Path, manifest_text: str | bytes | None, files: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if manifest_text is not None:
            zf.writestr("MAR-INF/MANIFEST.json", manifest_text)
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def write_tar(path: Path, entries: list[tuple[str, str]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, text in entries:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def write_tar_bomb(path: Path) -> Path:
    """40 members of 512 KiB zeros: 20 MiB unpacked from about 20 KiB."""
    chunk = b"\0" * (512 * 1024)
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("MAR-INF/MANIFEST.json")
        data = manifest(handler="h.py").encode()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        for i in range(40):
            info = tarfile.TarInfo(f"zeros{i}.bin")
            info.size = len(chunk)
            tf.addfile(info, io.BytesIO(chunk))
    return path


def hostile_archives(store: Path) -> dict[str, str]:
    """Archive name -> text its 400 must contain."""
    write_mar(store / "bomb.mar", manifest(handler="h.py"),
              {"h.py": GOOD_HANDLER, "zeros.bin": b"\0" * (8 * LIMIT)})
    write_tar_bomb(store / "bomb.tar.gz")
    write_mar(store / "slip.mar", manifest(handler="h.py"), {"../../escaped.txt": b"x"})
    write_mar(store / "badjson.mar", "{not json", {"h.py": GOOD_HANDLER})
    write_mar(store / "nomodel.mar", json.dumps({"model": "m"}), {"h.py": GOOD_HANDLER})
    write_mar(store / "deepjson.mar", "[" * 100000 + "]" * 100000, {"h.py": GOOD_HANDLER})
    write_mar(store / "intname.mar", json.dumps({"model": {"modelName": 123, "handler": "h.py"}}),
              {"h.py": GOOD_HANDLER})
    write_mar(store / "listhandler.mar", manifest(handler=[]), {"h.py": GOOD_HANDLER})
    write_mar(store / "longentry.mar", manifest(handler="h.py"),
              {"h.py": GOOD_HANDLER, "d" * 300 + "/f.txt": b"x"})
    write_mar(store / "badyaml.mar", manifest(handler="h.py", configFile="model-config.yaml"),
              {"h.py": GOOD_HANDLER, "model-config.yaml": "a: [unclosed\n"})
    write_mar(store / "nohandler.mar", manifest(handler="missing.py"), {})
    write_mar(store / "dotversion.mar", manifest(handler="h.py", modelVersion="../../../x"),
              {"h.py": GOOD_HANDLER})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate: that is the point
        write_mar(store / "twomanifests.mar", manifest(handler="h.py"),
                  {"h.py": GOOD_HANDLER, "MAR-INF/MANIFEST.json": manifest(handler="evil.py")})
    write_tar(store / "twohandlers.tar.gz", [("MAR-INF/MANIFEST.json", manifest(handler="h.py")),
                                             ("h.py", GOOD_HANDLER), ("./h.py", GOOD_HANDLER)])
    return {"dotversion.mar": "manifest field modelVersion", "twomanifests.mar": "twice",
            "twohandlers.tar.gz": "twice", "bomb.mar": "bytes", "bomb.tar.gz": "bytes",
            "slip.mar": "escapes",
            "badjson.mar": "not valid JSON", "nomodel.mar": "'model' object",
            "deepjson.mar": "nested too deeply", "intname.mar": "modelName must be a string",
            "listhandler.mar": "handler must be a string", "longentry.mar": "longer than",
            "badyaml.mar": "not valid YAML"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = tmp_path_factory.mktemp("hardening-store")
    outside = tmp_path_factory.mktemp("outside")
    marker = outside / "imported.marker"
    (outside / "outside.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "import torch\n\nclass Net(torch.nn.Module):\n    pass\n")
    hostile_archives(store)
    write_mar(store / "failing.mar", manifest(handler="h.py"), {"h.py": FAILING_HANDLER})
    write_mar(store / "slow.mar", manifest(handler="h.py"), {"h.py": SLOW_HANDLER})
    write_mar(store / "good.mar", manifest(handler="h.py"), {"h.py": GOOD_HANDLER})
    write_mar(store / "laughs.mar", manifest(handler="h.py", configFile="model-config.yaml"),
              {"h.py": GOOD_HANDLER, "model-config.yaml": BILLION_LAUGHS})
    escape = "../" * 12 + f"{outside}/outside.py"
    write_mar(store / "modelfile.mar", manifest(handler="h.py", modelFile=escape,
                                                serializedFile="w.pt"),
              {"h.py": GOOD_HANDLER, "w.pt": b"x"})
    write_mar(store / "absolute.mar", manifest(handler="h.py", serializedFile="/etc/passwd"),
              {"h.py": GOOD_HANDLER})
    write_mar(store / "extra.mar", manifest(handler="h.py", extraFiles="ok.txt,../../x.txt"),
              {"h.py": GOOD_HANDLER, "ok.txt": "x"})
    linked = store / "linkdir"
    (linked / "MAR-INF").mkdir(parents=True)
    (linked / "MAR-INF" / "MANIFEST.json").write_text(manifest(handler="h.py",
                                                               modelFile="net.py"))
    (linked / "h.py").write_text(GOOD_HANDLER)
    (linked / "net.py").symlink_to(outside / "outside.py")
    return store, marker


@pytest.fixture(scope="module")
def site(store):
    """A web server offering the store's files, for registrations by URL (downloads)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(store[0]))
    handler.log_message = lambda *args: None
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{web.server_address[1]}"
    web.shutdown()


@pytest.fixture(scope="module")
def server(store, site):
    server = ServerProcess(model_store=store[0], config={
        "max_archive_size": LIMIT, "max_archive_files": 50,
        "allowed_urls": re.escape(site) + "/.*"})
    yield server
    server.stop()


def workspace_files(server: ServerProcess) -> list[str]:
    """What archives left in the workspace (config snapshots, the record of the management
    changes that succeeded, are not left by an archive)."""
    workspace = server.workdir / "workspace"
    return sorted(str(p.relative_to(workspace)) for p in workspace.rglob("*")
                  if (p.is_file() or (p.is_dir() and p.parent.name in ("models", "cache",
                                                                        "downloads")))
                  and p.relative_to(workspace).parts[0] != "config")


def written_bytes(server: ServerProcess) -> int:
    return psutil.Process(server.proc.pid).io_counters().write_chars


def test_refused_archives_leave_nothing_on_disk(server, store, site):
    expected = hostile_archives(store[0])
    for name, text in expected.items():
        for url in (name, f"{site}/{name}"):
            assert_error(server.register(url), 400, text=text)
            assert workspace_files(server) == [], (url, workspace_files(server))
    for url in ("nohandler.mar", f"{site}/nohandler.mar", "failing.mar", f"{site}/failing.mar"):
        assert_error(server.register(url), 500, "ModelLoadException")
        assert workspace_files(server) == [], (url, workspace_files(server))
    assert_error(server.register(f"{site}/good.mar", sha256="0" * 64), 400, text="mismatch")
    assert workspace_files(server) == []
    assert server.manage("GET", "/models").json()["models"] == []
    assert server.get("/ping").status_code == 200


def test_tar_bomb_is_refused_before_it_is_written(server):
    before = written_bytes(server)
    assert_error(server.register("bomb.tar.gz"), 400, "InvalidModelArchiveException",
                 "possible tar bomb")
    assert written_bytes(server) - before < LIMIT // 4
    assert workspace_files(server) == []


def test_zip_bomb_stops_at_the_limit(server):
    before = written_bytes(server)
    assert_error(server.register("bomb.mar"), 400, "InvalidModelArchiveException", "bytes")
    assert written_bytes(server) - before < LIMIT // 4


@pytest.mark.slow
@pytest.mark.parametrize("name,field", [
    ("modelfile.mar", "modelFile"), ("absolute.mar", "serializedFile"),
    ("extra.mar", "extraFiles"), ("linkdir", "modelFile")])
def test_manifest_paths_outside_the_model_folder_are_refused(server, store, name, field):
    body = assert_error(server.register(name), 400, "InvalidModelArchiveException",
                        f"manifest field {field}")
    assert "outside the model's folder" in body["message"]
    time.sleep(0.5)
    assert not store[1].exists(), "the file outside the archive must never be imported"
    assert workspace_files(server) == []


def test_plain_versions_register_and_serve_under_their_own_urls(server, store):
    for version in ("2", "v1", "1.0.0-rc1", "2024_01_02"):
        write_mar(store[0] / f"ver-{version}.mar",
                  manifest(modelName="ver", modelVersion=version, handler="h.py"),
                  {"h.py": GOOD_HANDLER})
        answer = server.register(f"ver-{version}.mar", initial_workers=0)
        assert answer.status_code == 200, answer.text
        assert f"Version: {version} registered" in answer.json()["status"]
        described = server.manage("GET", f"/models/ver/{version}").json()
        assert described[0]["modelVersion"] == version
        assert server.manage("DELETE", f"/models/ver/{version}").status_code == 200
    assert workspace_files(server) == []


def test_handler_parameter_outside_the_model_folder_is_refused(server):
    assert_error(server.register("good.mar", handler="../../../etc/evil.py"), 400,
                 "InvalidModelArchiveException", "manifest field handler")
    assert workspace_files(server) == []


def test_long_file_name_in_url_is_a_400(server):
    assert_error(server.register("x" * 300 + ".mar"), 400, "BadRequestException", "not usable")
    assert_error(server.register("file:///" + "y" * 300 + ".mar"), 403)


def test_yaml_alias_bomb_is_refused_fast_and_the_server_stays_responsive(server):
    process = psutil.Process(server.proc.pid)
    rss_before = process.memory_info().rss
    answer: list = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: answer.append(server.register("laughs.mar")))
    thread.start()
    pings = []
    while thread.is_alive():
        t0 = time.monotonic()
        pings.append((server.get("/ping", timeout=5).status_code, time.monotonic() - t0))
        time.sleep(0.02)
    thread.join()
    elapsed = time.monotonic() - started
    assert_error(answer[0], 400, "InvalidModelArchiveException", "aliases")
    assert elapsed < 3, elapsed
    assert all(code == 200 and took < 1 for code, took in pings), pings
    assert process.memory_info().rss - rss_before < 100 * 1024 * 1024
    assert workspace_files(server) == []


def _wait_registered(server: ServerProcess, name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.manage("GET", f"/models/{name}").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} was not registered:\n{server.log()}")


@pytest.mark.slow
def test_unregister_while_loading_answers_409_and_register_finishes(server):
    answer: list = []
    thread = threading.Thread(target=lambda: answer.append(
        server.register("slow.mar", model_name="slow")))
    thread.start()
    _wait_registered(server, "slow")
    assert_error(server.manage("DELETE", "/models/slow"), 409, "ConflictStatusException",
                 "is being loaded or scaled")
    thread.join(120)
    assert answer[0].status_code == 200, answer[0].text
    assert server.post("/predictions/slow", data=b"x").text == "ok"

    scaling = threading.Thread(target=lambda: answer.append(
        server.manage("PUT", "/models/slow", params={"min_worker": 2, "synchronous": "true"})))
    scaling.start()
    time.sleep(1)
    assert_error(server.manage("DELETE", "/models/slow"), 409, "ConflictStatusException",
                 "retry the unregister")
    scaling.join(120)
    assert answer[1].status_code == 200, answer[1].text

    assert server.manage("DELETE", "/models/slow").status_code == 200
    assert workspace_files(server) == []
    assert server.get("/ping").status_code == 200

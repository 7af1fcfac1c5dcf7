"""Where archives come from: allow-list, storage plugin call, download cache, sha256 pin."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tsf import hookimpl
from tsf.archives.sources import ArchiveSources, FetchedArchive
from tsf.config.settings import ServerConfig
from tsf.errors import BadRequest, Forbidden
from tsf.plugins import create_manager

CONTENT = b"an archive's bytes"
DIGEST = hashlib.sha256(CONTENT).hexdigest()


class FakeDownloads:
    """A storage plugin for ``fake://`` URLs that 'downloads' CONTENT into ``dest``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def tsf_fetch_archive(self, url: str, dest: str, config) -> str | None:
        if not url.startswith("fake://"):
            return None
        self.calls.append(url)
        target = Path(dest) / f"download-{len(self.calls)}.mar"
        target.write_bytes(CONTENT)
        return str(target)


@pytest.fixture
def store(tmp_path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "local.mar").write_bytes(CONTENT)
    return folder


def sources_for(tmp_path: Path, store: Path, allowed: str = r"fake://.*"
                ) -> tuple[ArchiveSources, FakeDownloads]:
    pm = create_manager(("tsf.storage",), load_entry_points=False)
    plugin = FakeDownloads()
    pm.register(plugin)
    config = ServerConfig(model_store=str(store), allowed_urls=allowed)
    return ArchiveSources(config, pm, tmp_path / "workspace"), plugin


def fetch(sources: ArchiveSources, url: str, sha256: str | None = None) -> FetchedArchive:
    return asyncio.run(sources.fetch(url, sha256))


def test_a_url_outside_the_allow_list_is_refused_before_any_plugin_runs(tmp_path, store):
    sources, plugin = sources_for(tmp_path, store, allowed="")
    with pytest.raises(Forbidden, match="not allowed"):
        fetch(sources, "fake://host/m.mar")
    assert plugin.calls == []
    with pytest.raises(Forbidden):
        fetch(sources, f"file://{tmp_path}/elsewhere.mar")


def test_a_malformed_sha256_is_refused_before_any_plugin_runs(tmp_path, store):
    sources, plugin = sources_for(tmp_path, store)
    with pytest.raises(BadRequest, match="64 hexadecimal"):
        fetch(sources, "fake://host/m.mar", sha256="xyz")
    assert plugin.calls == []


def test_a_url_no_plugin_handles_is_a_bad_request(tmp_path, store):
    sources, _ = sources_for(tmp_path, store, allowed=r"gopher://.*")
    with pytest.raises(BadRequest, match="no storage plugin"):
        fetch(sources, "gopher://host/m.mar")


def test_a_download_is_cached_by_content_once(tmp_path, store):
    sources, plugin = sources_for(tmp_path, store)
    first = fetch(sources, "fake://host/a.mar")  # cache miss: this fetch made the copy
    assert first.path == sources.cache / f"{DIGEST}.mar"
    assert first.fresh == first.path and first.path.read_bytes() == CONTENT
    again = fetch(sources, "fake://other/b.mar", sha256=DIGEST.upper())  # hit, any URL
    assert again == FetchedArchive(first.path, None)
    assert plugin.calls == ["fake://host/a.mar", "fake://other/b.mar"]
    assert list(sources.downloads.iterdir()) == []  # the second download was dropped


def test_a_digest_mismatch_removes_only_the_copy_this_fetch_made(tmp_path, store):
    sources, _ = sources_for(tmp_path, store)
    with pytest.raises(BadRequest, match="digest mismatch"):
        fetch(sources, "fake://host/a.mar", sha256="0" * 64)
    assert not (sources.cache / f"{DIGEST}.mar").exists()
    cached = fetch(sources, "fake://host/a.mar").path  # an earlier registration's copy
    with pytest.raises(BadRequest, match="digest mismatch"):
        fetch(sources, "fake://host/a.mar", sha256="0" * 64)
    assert cached.exists()


def test_model_store_files_are_used_in_place_and_checked_too(tmp_path, store):
    sources, _ = sources_for(tmp_path, store, allowed="")
    fetched = fetch(sources, "local.mar", sha256=DIGEST)
    assert fetched == FetchedArchive(store / "local.mar", None)
    with pytest.raises(BadRequest, match="digest mismatch"):
        fetch(sources, "local.mar", sha256="f" * 64)
    assert (store / "local.mar").exists()  # never deleted: it is not a fresh download
    assert fetch(sources, f"file://{store}/local.mar").path == store / "local.mar"


def test_discard_fresh_deletes_only_a_fresh_copy(tmp_path):
    kept, made = tmp_path / "kept.mar", tmp_path / "made.mar"
    kept.write_bytes(b"1")
    made.write_bytes(b"2")
    FetchedArchive(kept).discard_fresh()
    FetchedArchive(made, made).discard_fresh()
    assert kept.exists() and not made.exists()


def test_an_absolute_path_is_found_only_inside_the_model_store(tmp_path):
    """TorchServe's own tests register ``url=<model_store>/name``; anything else stays out."""
    from types import SimpleNamespace

    from tsf.archives.storage import tsf_fetch_archive
    from tsf.errors import BadRequest

    store = tmp_path / "store"
    (store / "m").mkdir(parents=True)
    config = SimpleNamespace(model_store=str(store))
    assert tsf_fetch_archive(url=str(store / "m"), dest=str(tmp_path), config=config) == \
        str(store / "m")
    for outside in (str(tmp_path), "/etc/passwd", f"{store}/../store/m"):
        with pytest.raises(BadRequest, match="inside the model store"):
            tsf_fetch_archive(url=outside, dest=str(tmp_path), config=config)

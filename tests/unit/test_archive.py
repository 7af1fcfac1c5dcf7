"""Archive writing and safe extraction."""

from __future__ import annotations

import json
import zipfile

import pytest

from tsf.archives.reader import (Limits, _extract_zip, confined_path, open_archive, read_manifest,
                                 read_model_config)
from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.errors import BadRequest, InvalidArchive


@pytest.fixture
def files(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"weights")
    (tmp_path / "h.py").write_text("def handle(d, c):\n    return d\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "index_to_name.json").write_text('{"0": "cat"}')
    (extra / "sub").mkdir()
    (extra / "sub" / "vocab.txt").write_text("a\nb\n")
    (tmp_path / "model-config.yaml").write_text("batchSize: 4\nminWorkers: 2\n")
    return tmp_path


@pytest.mark.parametrize("fmt", ["default", "tgz", "no-archive", "zip-store"])
def test_roundtrip_every_format(files, tmp_path, fmt):
    out = write_archive(ArchiveSpec(
        model_name="m", version="2.0", handler=str(files / "h.py"),
        serialized_file=str(files / "w.pt"), extra_files=str(files / "extra"),
        config_file=str(files / "model-config.yaml"), export_path=str(tmp_path / "out"),
        archive_format=fmt))
    archive = open_archive(out, tmp_path / "ws", Limits())
    assert archive.model_name == "m" and archive.model_version == "2.0"
    assert archive.handler == "h.py"
    model = archive.manifest["model"]
    assert model["serializedFile"] == "w.pt" and model["configFile"] == "model-config.yaml"
    assert set(archive.manifest) >= {"createdOn", "runtime", "model", "archiverVersion"}
    # extra-file folders are merged into the root, like torch-model-archiver does
    assert (archive.model_dir / "index_to_name.json").exists()
    assert (archive.model_dir / "sub" / "vocab.txt").read_text() == "a\nb\n"
    assert archive.model_config == {"batchSize": 4, "minWorkers": 2}


def test_existing_archive_needs_force(files, tmp_path):
    spec = ArchiveSpec(model_name="m", handler="base", serialized_file=str(files / "w.pt"),
                       export_path=str(tmp_path))
    write_archive(spec)
    with pytest.raises(BadRequest, match="-f"):
        write_archive(spec)
    spec.force = True
    assert write_archive(spec).exists()


def test_missing_input_file_is_an_error(tmp_path):
    with pytest.raises(BadRequest, match="does not exist"):
        write_archive(ArchiveSpec(model_name="m", serialized_file=str(tmp_path / "nope.pt"),
                                  export_path=str(tmp_path)))


def test_directory_without_manifest_gets_one(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"x")
    archive = open_archive(folder, tmp_path / "ws", Limits())
    assert archive.model_dir == folder
    assert archive.model["serializedFile"] == "model.pt" and archive.model_name == "plain"


def test_zip_whose_header_lies_about_its_size_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "liar.mar"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {}}))
        zf.writestr("big.bin", b"\0" * 200_000)
    real_infolist = zipfile.ZipFile.infolist

    def lying_infolist(self):
        infos = real_infolist(self)
        for info in infos:
            info.file_size = 10  # the header claims a tiny file
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying_infolist)
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(InvalidArchive):
        _extract_zip(path, target, Limits(max_bytes=100_000))


def test_invalid_manifest_and_config(tmp_path):
    folder = tmp_path / "m"
    (folder / "MAR-INF").mkdir(parents=True)
    (folder / "MAR-INF" / "MANIFEST.json").write_text("{nope")
    with pytest.raises(InvalidArchive, match="not valid JSON"):
        open_archive(folder, tmp_path / "ws", Limits())
    (folder / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(
        {"model": {"configFile": "c.yaml"}}))
    (folder / "c.yaml").write_text("- a list\n")
    with pytest.raises(InvalidArchive, match="mapping"):
        open_archive(folder, tmp_path / "ws", Limits())


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    import time

    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (tmp_path / "model-config.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(InvalidArchive, match="aliases"):
        read_model_config(tmp_path, {"model": {}})
    assert time.monotonic() - started < 1


def test_yaml_with_a_few_aliases_still_loads(tmp_path):
    (tmp_path / "model-config.yaml").write_text(
        "defaults: &d {batchSize: 4}\nbatchSize: 4\nhandler: *d\n")
    assert read_model_config(tmp_path, {"model": {}}) == {
        "defaults": {"batchSize": 4}, "batchSize": 4, "handler": {"batchSize": 4}}


def test_paths_are_confined_to_the_model_folder(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "outside.py").write_text("")
    (tmp_path / "model" / "link.py").symlink_to(tmp_path / "outside.py")
    assert confined_path(tmp_path / "model", "sub/w.pt", "serializedFile") == \
        (tmp_path / "model" / "sub" / "w.pt").resolve()
    for name in ("../outside.py", "/etc/passwd", "link.py", "a/../../outside.py"):
        with pytest.raises(InvalidArchive, match="manifest field modelFile"):
            confined_path(tmp_path / "model", name, "modelFile")


def test_odd_manifests_are_refused_with_the_field_named(tmp_path):
    (tmp_path / "MAR-INF").mkdir()
    manifest = tmp_path / "MAR-INF" / "MANIFEST.json"
    for text, message in [("[" * 100000, "nested too deeply"),
                          ('{"model": 5}', "'model' object"),
                          ('{"model": {"modelName": 123}}', "modelName must be a string"),
                          ('{"model": {"handler": []}}', "handler must be a string"),
                          ('{"model": {"extraFiles": {}}}', "extraFiles must be a string")]:
        manifest.write_text(text)
        with pytest.raises(InvalidArchive, match=message):
            read_manifest(tmp_path)


@pytest.mark.parametrize("version", ["1.0", "2", "v1", "1.0.0-rc1", "2024_01_02", "1.0.post1",
                                     "A" * 64])
def test_plain_versions_are_accepted(tmp_path, version):
    (tmp_path / "MAR-INF").mkdir()
    (tmp_path / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(
        {"model": {"modelName": "m", "modelVersion": version}}))
    assert open_archive(tmp_path, tmp_path / "ws", Limits()).model_version == version


@pytest.mark.parametrize("version", ["../../../x", "..", "1..0", "1.0/x", "1.0\\x", "/1",
                                     ".1", "-1", " 1.0", "1.0\n", "1 0", "1.0%2F", "v1:2",
                                     "é1", "A" * 65])
def test_versions_that_are_not_plain_are_refused_naming_the_field(tmp_path, version):
    (tmp_path / "MAR-INF").mkdir()
    (tmp_path / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(
        {"model": {"modelName": "m", "modelVersion": version}}))
    with pytest.raises(InvalidArchive, match="manifest field modelVersion"):
        open_archive(tmp_path, tmp_path / "ws", Limits())


def test_an_archive_cannot_be_written_with_a_version_that_is_not_plain(files, tmp_path):
    with pytest.raises(InvalidArchive, match="modelVersion"):
        write_archive(ArchiveSpec(model_name="m", version="../x", handler=str(files / "h.py"),
                                  export_path=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def _zip_with(tmp_path, names: list[str]):
    import warnings

    path = tmp_path / "dup.mar"
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate: that is the point
        for i, name in enumerate(names):
            zf.writestr(name, json.dumps({"model": {"modelName": f"m{i}"}}))
    return path


def _tar_with(tmp_path, names: list[str]):
    import io
    import tarfile

    path = tmp_path / "dup.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for i, name in enumerate(names):
            data = json.dumps({"model": {"modelName": f"m{i}"}}).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("make", [_zip_with, _tar_with])
@pytest.mark.parametrize("names", [
    ["MAR-INF/MANIFEST.json", "MAR-INF/MANIFEST.json"],
    ["MAR-INF/MANIFEST.json", "h.py", "./h.py"],
    ["MAR-INF/MANIFEST.json", "a/b.txt", "a//b.txt"],
])
def test_archives_holding_one_name_twice_are_refused(tmp_path, make, names):
    path = make(tmp_path, names)
    with pytest.raises(InvalidArchive, match="twice"):
        open_archive(path, tmp_path / "ws", Limits())
    assert not (tmp_path / "ws").exists() or list((tmp_path / "ws").iterdir()) == []


@pytest.mark.parametrize("handler", ["../../x", "a/b", "..\\x", "/etc/x:fn"])
def test_a_handler_name_with_a_path_in_it_is_refused(tmp_path, handler):
    (tmp_path / "MAR-INF").mkdir()
    (tmp_path / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(
        {"model": {"modelName": "m", "handler": handler}}))
    with pytest.raises(InvalidArchive, match="manifest field handler"):
        open_archive(tmp_path, tmp_path / "ws", Limits())

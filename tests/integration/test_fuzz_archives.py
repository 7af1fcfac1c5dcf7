"""Seeded random mutations of valid archives, registered through the management API.

Every answer must be a 2xx or tsf's 4xx JSON error (never a framework 500), ``/ping`` stays 200
and a refused archive leaves nothing in the workspace.  Accepted ones are registered with no
workers (loading handlers is not what this fuzzes) and unregistered again.  The edge cases must
be refused with 400: an entry named twice, and a path that leaves the folder in any manifest
field that names a file, the model or its version.
"""

from __future__ import annotations

import io
import warnings
import json
import random
import re
import tarfile
import time
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest

from tsf.testing import ServerProcess

SEED = 20261125
ROUNDS = 160
LIMIT = 256 * 1024

HANDLER = "def handle(data, context):\n    return data\n"
CONFIG = "batchSize: 2\nmaxBatchDelay: 50\nhandler:\n  threshold: 0.5\n"
FIELDS = ("modelName", "modelVersion", "handler", "serializedFile", "modelFile", "configFile",
          "extraFiles", "requirementsFile", "runtime")
ODD_NAMES = ["../up.txt", "/abs.txt", "C:/drive.txt", "a\\..\\..\\b.txt", "", ".", "./",
             "x" * 300, "d" * 260 + "/f", "ünïcödé.txt", "sp ace/..../x", "MAR-INF/",
             "deep/" * 40 + "f.txt", "nul\x01name.txt"]


def odd_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randint(-2**40, 2**40)
    if kind == 1:
        return None
    if kind == 2 and depth < 3:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if kind == 3 and depth < 3:
        return {str(rng.random()): odd_value(rng, depth + 1)}
    if kind == 4:
        return rng.choice(ODD_NAMES)
    if kind == 5:
        return "../" * rng.randrange(1, 8) + "etc/passwd"
    if kind == 6:
        return rng.choice([True, 1.5, "", "h.py", "w.pt", "model-config.yaml", "a,b,../c"])
    return "".join(rng.choice("ab._-/:é\u202e") for _ in range(rng.randrange(1, 40)))


def fuzz_manifest(rng: random.Random) -> bytes:
    model = {"modelName": "fz", "modelVersion": "1.0", "handler": "h.py",
             "configFile": "model-config.yaml"}
    choice = rng.randrange(8)
    if choice == 0:
        return b"[" * rng.randrange(1000, 50000)
    if choice == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if choice == 2:
        return json.dumps(odd_value(rng)).encode()
    if choice == 3:
        return json.dumps({"model": odd_value(rng)}).encode()
    for _ in range(rng.randrange(1, 4)):
        model[rng.choice(FIELDS)] = odd_value(rng)
    return json.dumps({"runtime": "python", "model": model}).encode()


def fuzz_config(rng: random.Random) -> str:
    return rng.choice([
        CONFIG, "a: &a [1,2]\nb: [*a, *a, *a]\n", "[unclosed", "- a\n- b\n",
        "!!python/object:os.system {}\n",
        "x: " + "[" * 3000 + "]" * 3000 + "\n", "\0\1\2", "minWorkers: many\n",
        "a: &a ['x','x','x','x','x','x','x','x']\n" + "".join(
            f"a{i}: &a{i} [{','.join(['*a' if i == 1 else f'*a{i - 1}'] * 8)}]\n"
            for i in range(1, 8))])


def zip_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicated names are the point
        for name, data in entries:
            info = zipfile.ZipInfo(name)  # taken as is: empty and odd names too
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def tar_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def valid_entries() -> list[tuple[str, bytes]]:
    manifest = {"runtime": "python", "model": {"modelName": "fz", "modelVersion": "1.0",
                                                "handler": "h.py",
                                                "configFile": "model-config.yaml"}}
    return [("MAR-INF/MANIFEST.json", json.dumps(manifest).encode()), ("h.py", HANDLER.encode()),
            ("model-config.yaml", CONFIG.encode())]


def mutate(rng: random.Random) -> tuple[str, bytes]:
    """A file name and the bytes of one mutated archive."""
    entries = valid_entries()
    kind = rng.randrange(7)
    if kind == 0:
        entries[0] = (entries[0][0], fuzz_manifest(rng))
    elif kind == 1:
        entries[2] = (entries[2][0], fuzz_config(rng).encode())
    elif kind == 2:
        entries.append((rng.choice(ODD_NAMES), b"odd"))
    elif kind == 3:
        entries += [entries[1], entries[0]]  # duplicated entries
    elif kind == 4:
        entries.append(("big.bin", b"\0" * (LIMIT + rng.randrange(1, LIMIT))))
    as_tar = rng.random() < 0.4
    try:
        data = (tar_bytes if as_tar else zip_bytes)(entries)
    except (ValueError, UnicodeError):
        data = zip_bytes(valid_entries())
    if kind == 5:
        data = data[:rng.randrange(len(data))]
    elif kind == 6:
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 20)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        data = bytes(flipped)
    return ("fuzz.tar.gz" if as_tar else "fuzz.mar"), data


TRAVERSALS = ["../x", "../../../etc/passwd", "/etc/passwd", "a/../../b", "..\\..\\x", "..",
              "./../x", "sub/../../x"]
# manifest fields whose traversal must be refused, and the text of the refusal
REFUSED_FIELDS = {"modelName": "invalid model name", "modelVersion": "modelVersion",
                  "handler": "handler", "serializedFile": "serializedFile",
                  "modelFile": "modelFile", "configFile": "configFile",
                  "extraFiles": "extraFiles", "requirementsFile": "requirementsFile"}


def edge_archive(rng: random.Random) -> tuple[str, bytes, str | None]:
    """A file name, the archive's bytes and the text its 400 must hold (None: a text field,
    where ``..`` is only text, so any answer that leaves nothing on disk will do)."""
    as_tar = rng.random() < 0.4
    entries = valid_entries()
    kind = rng.choice(["duplicate", "traversal", "text"])
    expected: str | None
    if kind == "duplicate":
        name, data = rng.choice(entries)
        entries.insert(rng.randrange(len(entries) + 1),
                       (rng.choice(["", "./", ".//"]) + name, data + b"\n"))
        expected = "twice"
    else:
        field = rng.choice(list(REFUSED_FIELDS)) if kind == "traversal" else \
            rng.choice(["description", "runtime"])
        value = rng.choice(TRAVERSALS)
        if field == "handler" and rng.random() < 0.5:
            value += ".py"
        elif field == "extraFiles":
            value = "ok.txt," + value
        manifest = json.loads(entries[0][1])
        manifest["model"][field] = value
        entries[0] = (entries[0][0], json.dumps(manifest).encode())
        expected = REFUSED_FIELDS.get(field)
    data = (tar_bytes if as_tar else zip_bytes)(entries)
    return ("edge.tar.gz" if as_tar else "edge.mar"), data, expected


def leftovers(server: ServerProcess) -> list[Path]:
    workspace = server.workdir / "workspace"
    return [p for folder in ("models", "downloads", "cache")
            for p in (workspace / folder).glob("*") if (workspace / folder).exists()]


@pytest.mark.slow
def test_mutated_archives_get_2xx_or_a_json_4xx(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    server = ServerProcess(model_store=store, config={"max_archive_size": LIMIT,
                                                       "max_archive_files": 100})
    rng = random.Random(SEED)
    started = time.monotonic()
    statuses: dict[int, int] = {}
    try:
        for i in range(ROUNDS):
            suffix, data = mutate(rng)
            name = f"a{i}-{suffix}"
            (store / name).write_bytes(data)
            response = server.register(name, initial_workers=0, timeout=30)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (i, response.status_code, response.text)
            if response.status_code >= 400:
                body = response.json()
                assert set(body) >= {"code", "type", "message"}, body
                assert leftovers(server) == [], (i, response.text, leftovers(server))
            else:
                found = re.search(r'Model "(.+)" Version: (.*) registered with',
                                  response.json()["status"])
                assert found, response.text
                version = quote(found[2], safe="")
                removed = server.manage("DELETE", f"/models/{found[1]}/{version}")
                assert removed.status_code == 200, removed.text
                assert leftovers(server) == []
            if i % 10 == 0:
                assert server.get("/ping", timeout=5).status_code == 200
        assert server.get("/ping").status_code == 200
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert time.monotonic() - started < 60
    print("answers by status:", statuses)
    assert sum(n for code, n in statuses.items() if code >= 400) > ROUNDS // 3, statuses


EDGE_ROUNDS = 60


@pytest.mark.slow
def test_duplicate_entries_and_traversal_in_any_manifest_field_get_400(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    server = ServerProcess(model_store=store)
    rng = random.Random(SEED + 1)
    try:
        for i in range(EDGE_ROUNDS):
            suffix, data, expected = edge_archive(rng)
            name = f"e{i}-{suffix}"
            (store / name).write_bytes(data)
            response = server.register(name, initial_workers=0, timeout=30)
            assert response.status_code < 500, (i, response.status_code, response.text)
            if expected is not None:
                assert response.status_code == 400, (i, expected, response.text)
                body = response.json()
                assert set(body) >= {"code", "type", "message"}, body
                assert expected in body["message"], (i, body)
            elif response.status_code == 200:
                found = re.search(r'Model "(.+)" Version: (.*) registered with',
                                  response.json()["status"])
                removed = server.manage("DELETE", f"/models/{found[1]}/{quote(found[2])}")
                assert removed.status_code == 200, removed.text
            assert leftovers(server) == [], (i, response.text, leftovers(server))
            assert not (tmp_path / "x").exists() and not (store.parent / "b").exists()
        assert server.get("/ping").status_code == 200
    finally:
        server.stop()

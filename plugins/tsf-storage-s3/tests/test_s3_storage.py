"""Register archives from S3 (moto's server on 127.0.0.1) through a real tsf server."""

from __future__ import annotations

import hashlib
import textwrap

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.testing import ServerProcess, assert_error

HANDLER = '''
    def handle(data, context):
        if data is None:
            return None
        return [{"length": len(row.get("body") or b"")} for row in data]
'''
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    src = tmp_path_factory.mktemp("s3-src")
    (src / "h.py").write_text(textwrap.dedent(HANDLER))
    write_archive(ArchiveSpec(model_name="lengths", handler=str(src / "h.py"),
                              export_path=str(src)))
    data = (src / "lengths.mar").read_bytes()
    client = boto3.client("s3", endpoint_url=endpoint, **{
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
        "region_name": "us-east-1"})
    for bucket in ("models", "private"):
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket="models", Key="team/lengths.mar", Body=data)
    client.put_object(Bucket="private", Key="lengths.mar", Body=data)
    store = tmp_path_factory.mktemp("s3-store")
    server = ServerProcess(model_store=store, config={"allowed_urls": r"s3://models/.*"},
                           env={**CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint})
    try:
        yield server, hashlib.sha256(data).hexdigest()
    finally:
        server.stop()
        moto.stop()


def test_register_from_s3_with_digest(s3):
    server, digest = s3
    r = server.register("s3://models/team/lengths.mar", sha256=digest)
    assert r.status_code == 200, r.text
    assert server.post("/predictions/lengths", data=b"abcde").json() == {"length": 5}
    cached = list((server.workdir / "workspace" / "cache").iterdir())
    assert [p.name for p in cached] == [f"{digest}.mar"]
    assert not list((server.workdir / "workspace" / "downloads").iterdir())
    assert server.manage("DELETE", "/models/lengths").status_code == 200


def test_s3_errors_are_precise(s3):
    server, digest = s3
    assert_error(server.register("s3://models/team/missing.mar"), 404,
                 "ModelNotFoundException", "does not exist")
    assert_error(server.register("s3://private/lengths.mar"), 403, "ForbiddenException",
                 "not allowed")
    assert_error(server.register("s3://models/team/lengths.mar", sha256="0" * 64), 400,
                 "BadRequestException", "digest mismatch")
    assert server.manage("GET", "/models").json()["models"] == []
    assert_error(server.register("s3://models/team/lengths.mar", sha256="xyz"), 400,
                 "BadRequestException", "64 hexadecimal digits")

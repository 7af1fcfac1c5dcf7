"""The ``s3`` capture sink against moto's S3 server on 127.0.0.1, through a real tsf server:
objects keyed as SageMaker keys them, and a bucket that is missing at first (every put fails)
retried with backoff while predictions carry on."""

from __future__ import annotations

import json
import re
import textwrap

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer
from tsf_storage_s3.capture import S3CaptureSink

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.errors import BadRequest
from tsf.testing import ServerProcess, assert_error, wait_for

HANDLER = '''
    def handle(data, context):
        if data is None:
            return None
        return [{"label": len(row.get("body") or b"") % 2} for row in data]
'''
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
KEY = re.compile(r"captured/odd/1\.0/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}"
                 r"\.jsonl")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    src, store = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("store")
    (src / "h.py").write_text(textwrap.dedent(HANDLER))
    (src / "config.yaml").write_text(yaml.safe_dump({"capture": {
        "sinks": {"s3": {"url": "s3://capture/captured"}}, "drift": False}}))
    write_archive(ArchiveSpec(model_name="odd", handler=str(src / "h.py"),
                              config_file=str(src / "config.yaml"), export_path=str(store)))
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    server = ServerProcess(model_store=store, models=["odd=odd.mar"],
                           env={**CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint})
    try:
        yield server, client
    finally:
        server.stop()
        moto.stop()


def objects(client) -> dict[str, list[dict]]:
    try:
        listed = client.list_objects_v2(Bucket="capture").get("Contents", [])
    except client.exceptions.NoSuchBucket:
        return {}
    return {o["Key"]: [json.loads(line) for line in client.get_object(
        Bucket="capture", Key=o["Key"])["Body"].read().splitlines()] for o in listed}


def errors(server: ServerProcess) -> float:
    for line in server.scrape().splitlines():
        if line.startswith('tsf_capture_sink_errors_total{sink="s3"}'):
            return float(line.split()[-1])
    return 0.0


def test_records_reach_s3_after_the_bucket_comes_back(setup):
    server, client = setup
    ids = []
    for i in range(10):  # the bucket does not exist yet: every put fails
        r = server.post("/predictions/odd", data=b"x" * i)
        assert r.status_code == 200, r.text
        ids.append(r.headers["X-Request-Id"])
    wait_for(lambda: errors(server) >= 1, 20, "the failing put was not counted")
    assert objects(client) == {}
    client.create_bucket(Bucket="capture")
    for i in range(5):
        r = server.post("/predictions/odd", data=b"y" * i)
        assert r.status_code == 200
        ids.append(r.headers["X-Request-Id"])
    found = wait_for(lambda: (o := objects(client)) and
                     sum(len(v) for v in o.values()) >= len(ids) and o, 30,
                     "records never reached S3")
    assert all(KEY.fullmatch(key) for key in found), list(found)
    records = [r for rs in found.values() for r in rs]
    assert sorted({r["eventMetadata"]["eventId"] for r in records}) == sorted(ids)
    first = next(r for r in records if r["eventMetadata"]["eventId"] == ids[3])
    assert first["captureData"]["endpointInput"]["data"] == "eHh4"  # b"xxx", base64
    assert json.loads(first["captureData"]["endpointOutput"]["data"]) == {"label": 1}
    dropped = [line for line in server.scrape().splitlines()
               if line.startswith("tsf_capture_dropped_records_total") and 's3"' in line]
    assert all(line.endswith(" 0.0") for line in dropped), dropped


def test_bad_s3_sink_options_are_refused(setup):
    server, _ = setup
    r = server.manage("PUT", "/models/odd", json={"capture": {"sinks": {"s3": {"url": "s4://x"}}}})
    assert_error(r, 400, "BadRequestException", "capture.sinks.s3.url")
    with pytest.raises(BadRequest, match="capture.sinks.s3.region"):
        S3CaptureSink({"url": "s3://b", "region": "x"}, None)
    assert S3CaptureSink({"url": "s3://b/p/q/"}, None).prefix == "p/q"

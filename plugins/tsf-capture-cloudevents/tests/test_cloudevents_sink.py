"""The ``cloudevents`` capture sink through a real tsf server, into a local HTTP receiver that
parses each event with the ``cloudevents`` library: KServe's payload-logger format, and a
receiver that answers 500 at first (retried with backoff, counted, predictions unaffected)."""

from __future__ import annotations

import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import yaml
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from tsf_capture_cloudevents.sink import CloudEventsSink

from tsf.archives.writer import ArchiveSpec, write_archive
from tsf.errors import BadRequest
from tsf.testing import ServerProcess, assert_error, wait_for

SLOW = 2.0
HANDLER = '''
    def handle(data, context):
        if data is None:
            return None
        return [{"label": 1, "echo": row.get("body")} for row in data]
'''


class Receiver(BaseHTTPRequestHandler):
    """Keeps every event it accepts; answers 500 to the first ``failures`` posts."""

    events: ClassVar[list] = []
    raw: ClassVar[list] = []
    failures = 0

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cls = type(self)
        if self.path == "/slow":
            time.sleep(SLOW)  # a receiver that hangs
        if cls.failures > 0:
            cls.failures -= 1
            self.send_response(500)
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            cls.raw.append(headers)
            cls.events.append(from_http_event(HTTPMessage(headers=headers, body=body)))
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/events"
    src, store = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("store")
    (src / "h.py").write_text(textwrap.dedent(HANDLER))
    (src / "config.yaml").write_text(yaml.safe_dump({"capture": {
        "sinks": {"cloudevents": {"url": url, "namespace": "team-a"}}, "drift": False,
        "feedback": False}}))
    write_archive(ArchiveSpec(model_name="iris", handler=str(src / "h.py"),
                              config_file=str(src / "config.yaml"), export_path=str(store)))
    server = ServerProcess(model_store=store, models=["iris=iris.mar"])
    try:
        yield server, url
    finally:
        server.stop()
        receiver.shutdown()
        receiver.server_close()


def counter(server: ServerProcess, name: str) -> float:
    for line in server.scrape().splitlines():
        if line.startswith(name + '{sink="cloudevents"}'):
            return float(line.split()[-1])
    return 0.0


def test_events_follow_kserves_logger_format(setup):
    server, _ = setup
    Receiver.failures = 2  # the receiver is down at first
    r = server.post("/predictions/iris", json={"instances": [[6.8, 2.8, 4.8, 1.4]]},
                    headers={"X-Inference-Id": "caller-1"})
    assert r.status_code == 200
    rid = r.headers["X-Request-Id"]
    wait_for(lambda: len(Receiver.events) >= 2, 30, "no events arrived")
    assert counter(server, "tsf_capture_sink_errors_total") == 2
    request, response = Receiver.events[:2]
    assert request.get_type() == "org.kubeflow.serving.inference.request"
    assert response.get_type() == "org.kubeflow.serving.inference.response"
    assert request.get_id() == response.get_id() == rid
    assert request.get_data() == {"instances": [[6.8, 2.8, 4.8, 1.4]]}
    assert response.get_data()["label"] == 1
    for event in (request, response):
        assert event.get_extension("inferenceservicename") == "iris"
        assert event.get_extension("namespace") == "team-a"
        assert event.get_extension("component") == "predictor"
        assert event.get_extension("endpoint") == ""
        assert event.get_extension("modelversion") == "1.0"
        assert event.get_extension("inferenceid") == "caller-1"
    headers = Receiver.raw[0]
    assert headers["ce-specversion"] == "1.0" and headers["content-type"] == "application/json"
    assert headers["ce-time"].endswith("Z")


def test_request_only_mode_and_bad_options(setup):
    server, url = setup
    r = server.manage("PUT", "/models/iris", json={"capture": {
        "mode": "request", "sinks": {"cloudevents": {"url": url}}, "drift": False}})
    assert r.status_code == 200, r.text
    before = len(Receiver.events)
    rid = server.post("/predictions/iris", data=b"plain text",
                      headers={"Content-Type": "text/plain"}).headers["X-Request-Id"]
    wait_for(lambda: any(e.get_id() == rid for e in Receiver.events), 20, "not sent")
    mine = [e for e in Receiver.events[before:] if e.get_id() == rid]
    assert [e.get_type() for e in mine] == ["org.kubeflow.serving.inference.request"]
    assert mine[0].get_data() == "plain text"
    assert_error(server.manage("PUT", "/models/iris", json={"capture": {
        "sinks": {"cloudevents": {"url": "ftp://x"}}}}), 400, "BadRequestException",
        "capture.sinks.cloudevents.url")
    with pytest.raises(BadRequest, match="capture.sinks.cloudevents.retries"):
        CloudEventsSink({"url": url, "retries": 3}, None)
    with pytest.raises(BadRequest, match="headers"):
        CloudEventsSink({"url": url, "headers": {"A": 1}}, None)


def test_a_hanging_receiver_does_not_slow_predictions(setup):
    server, url = setup
    slow = url.rsplit("/", 1)[0] + "/slow"
    r = server.manage("PUT", "/models/iris", json={"capture": {
        "sinks": {"cloudevents": {"url": slow, "timeout": 30}}, "drift": False}})
    assert r.status_code == 200, r.text
    started = time.monotonic()
    for i in range(3):  # each capture waits SLOW seconds at the receiver, in the sink thread
        assert server.post("/predictions/iris", json={"i": i}).status_code == 200
    assert time.monotonic() - started < SLOW  # capture on the request path would take 3x
    assert server.manage("PUT", "/models/iris?capture=false").status_code == 200

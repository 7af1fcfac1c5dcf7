"""OpenTelemetry traces through a real collector (rotel) to a receiver in this test.

tsf exports OTLP (gRPC or HTTP/protobuf) to ``rotel-agent``; rotel forwards everything over
OTLP/HTTP to a small receiver here, which decodes the protobuf so the trace tree can be checked.
"""

from __future__ import annotations

import gzip
import http.server
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import rotel
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tsf.testing import ServerProcess, free_port, stop_process

ROTEL = Path(rotel.__file__).with_name("rotel-agent")
INCOMING_PARENT = "00f067aa0ba902b7"


class Receiver(http.server.ThreadingHTTPServer):
    """Collects the spans of every OTLP/HTTP export it receives."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.spans: list = []
        self.lock = threading.Lock()


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        spans = [span for rs in request.resource_spans for ss in rs.scope_spans
                 for span in ss.spans]
        with self.server.lock:
            self.server.spans.extend(spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    """rotel-agent on loopback, forwarding to the receiver; stopped by PID."""
    workdir = tmp_path_factory.mktemp("rotel")
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    grpc_port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [str(ROTEL), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--exporter", "otlp",
         "--otlp-exporter-endpoint", f"http://127.0.0.1:{receiver.server_port}",
         "--otlp-exporter-protocol", "http", "--batch-timeout", "100ms",
         "--pid-file", str(workdir / "rotel.pid"), "--log-file", str(workdir / "rotel.log")],
        stdout=open(workdir / "stdout.log", "wb"), stderr=subprocess.STDOUT)
    try:
        for port in (grpc_port, http_port):
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert proc.poll() is None, (workdir / "stdout.log").read_text()
                    assert time.monotonic() < deadline, "rotel did not listen"
                    time.sleep(0.1)
        yield {"grpc": f"http://127.0.0.1:{grpc_port}", "http/protobuf":
               f"http://127.0.0.1:{http_port}"}, receiver
    finally:
        stop_process(proc)
        receiver.shutdown()


def hexid(raw: bytes) -> str:
    return raw.hex()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_requests_queue_batch_and_stages_arrive_at_the_collector(model_store, collector,
                                                                   protocol):
    endpoints, receiver = collector
    incoming_trace = os.urandom(16).hex()  # a trace of its own per run: the receiver is shared
    service = f"tsf-test-{protocol.replace('/', '-')}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoints[protocol],
           "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_SERVICE_NAME": service,
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    server = ServerProcess(model_store=model_store, models=["echo=echo.mar"], env=env)
    try:
        deadline = time.monotonic() + 60
        while server.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        traceparent = f"00-{incoming_trace}-{INCOMING_PARENT}-01"

        def send(i: int):
            headers = {"traceparent": traceparent} if i == 0 else {}
            if i == 1:  # credentials in the query and a header: never in a span
                headers["Authorization"] = "Bearer SECRET-H"
                return server.post("/predictions/echo?token=SECRET-Q&x=1", json=[i],
                                   headers=headers)
            return server.post("/predictions/echo", json=[i], headers=headers)

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(send, range(4)))
        assert [r.status_code for r in responses] == [200] * 4
        assert max(r.json()["batch"] for r in responses) > 1, "requests should share a batch"
        trace_ids = {r.headers["X-Trace-Id"] for r in responses}
        assert responses[0].headers["X-Trace-Id"] == incoming_trace
    finally:
        server.stop()  # flushes the span processor

    def ours(everything: list) -> list:
        """Spans of our requests' traces, and of the batch traces linked to them."""
        batch_traces = {hexid(s.trace_id) for s in everything
                        if any(hexid(link.trace_id) in trace_ids for link in s.links)}
        return [s for s in everything if hexid(s.trace_id) in trace_ids | batch_traces]

    deadline = time.monotonic() + 20
    while True:
        with receiver.lock:
            spans = ours(list(receiver.spans))
        batches = [s for s in spans if s.name == "batch echo"]
        linked = {hexid(link.span_id) for b in batches for link in b.links}
        requests = [s for s in spans if s.name == "POST /predictions/{model_name}"]
        if len(requests) == 4 and len(linked) == 4:
            break
        assert time.monotonic() < deadline, f"collector got {[s.name for s in spans]}"
        time.sleep(0.2)

    by_id = {hexid(s.span_id): s for s in spans}
    # every request span is linked from exactly one batch span
    assert linked == {hexid(s.span_id) for s in requests}
    incoming = next(s for s in requests if hexid(s.trace_id) == incoming_trace)
    assert hexid(incoming.parent_span_id) == INCOMING_PARENT
    attributes = {a.key: a.value for a in incoming.attributes}
    assert attributes["http.request.method"].string_value == "POST"
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["tsf.model.name"].string_value == "echo"
    with_query = next(s for s in requests
                      if hexid(s.trace_id) == responses[1].headers["X-Trace-Id"])
    query = {a.key: a.value for a in with_query.attributes}["url.query"].string_value
    assert query == "token=REDACTED&x=1", query
    assert "SECRET" not in str([s.attributes for s in spans])
    queues = [s for s in spans if s.name == "queue wait"]
    assert {hexid(s.parent_span_id) for s in queues} == {hexid(s.span_id) for s in requests}
    for batch in batches:
        battrs = {a.key: a.value for a in batch.attributes}
        assert battrs["tsf.batch.size"].int_value == len(batch.links)
        assert battrs["tsf.worker.id"].string_value
        stages = [s for s in spans if hexid(s.parent_span_id) == hexid(batch.span_id)]
        assert [s.name for s in sorted(stages, key=lambda s: s.start_time_unix_nano)] == \
            ["preprocess", "inference", "postprocess"]
        for stage in stages:
            assert batch.start_time_unix_nano <= stage.start_time_unix_nano
            assert stage.end_time_unix_nano <= batch.end_time_unix_nano
    assert all(s.trace_id == by_id[hexid(s.parent_span_id)].trace_id for s in queues)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (enough to write a PredictionsRequest by hand)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_grpc_calls_are_traced_and_continue_traceparent(model_store, collector):
    grpc = pytest.importorskip("grpc")
    endpoints, receiver = collector
    incoming_trace = os.urandom(16).hex()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoints["http/protobuf"],
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "tsf-grpc",
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    server = ServerProcess(model_store=model_store, models=["echo=echo.mar"], env=env,
                           config={"enable_grpc": "true",
                                   "grpc_inference_address": "127.0.0.1:0",
                                   "grpc_management_address": "127.0.0.1:0"})
    method = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
    try:
        deadline = time.monotonic() + 60
        while server.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with grpc.insecure_channel(server.urls["grpc_inference"]) as channel:
            call = channel.unary_unary(method)  # raw bytes in and out
            request = _field(1, b"echo") + _field(3, _field(1, b"body") + _field(2, b"[7]"))
            answer = call(request, metadata=[
                ("traceparent", f"00-{incoming_trace}-{INCOMING_PARENT}-01")], timeout=30)
        assert b'"batch"' in answer
    finally:
        server.stop()

    deadline = time.monotonic() + 20
    while True:
        with receiver.lock:
            spans = [s for s in receiver.spans if hexid(s.trace_id) == incoming_trace]
            calls = [s for s in spans if s.name == method.lstrip("/")]
            batches = [s for s in receiver.spans if s.name == "batch echo" and calls and any(
                hexid(link.span_id) == hexid(calls[0].span_id) for link in s.links)]
        queues = [s for s in spans if s.name == "queue wait"]
        if calls and queues and batches:
            break
        assert time.monotonic() < deadline, f"collector got {[s.name for s in spans]}"
        time.sleep(0.2)
    call_span = calls[0]
    assert hexid(call_span.parent_span_id) == INCOMING_PARENT
    attributes = {a.key: a.value for a in call_span.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.method"].string_value == "Predictions"
    assert attributes["tsf.model.name"].string_value == "echo"
    assert hexid(queues[0].parent_span_id) == hexid(call_span.span_id)
    assert len(batches) == 1

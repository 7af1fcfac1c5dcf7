"""TorchServe's gRPC services, driven by stubs compiled at test time from the .proto files
that TorchServe 0.12 itself ships (inside the model-server.jar of its wheel, which is read, not
installed)."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")
protoc = pytest.importorskip("grpc_tools.protoc")

pytestmark = pytest.mark.slow


TORCHSERVE_WHEEL = "torchserve==0.12.0"
WHEEL_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "wheels"


def _torchserve_wheel() -> Path:
    """TorchServe's wheel, fetched once into .cache/wheels (`make setup` does it), never
    installed: the tsf environment's ``ts`` is tsf-ts-compat's."""
    found = sorted(WHEEL_CACHE.glob("torchserve-0.12.0-*.whl"))
    if not found:
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                  TORCHSERVE_WHEEL, "-d", str(WHEEL_CACHE)],
                                 capture_output=True, text=True, timeout=300)
        found = sorted(WHEEL_CACHE.glob("torchserve-0.12.0-*.whl"))
        if not found:
            pytest.skip(f"TorchServe's wheel (for its .proto files) is not in {WHEEL_CACHE} "
                        f"and could not be downloaded: {fetched.stderr.strip()[-300:]}")
    return found[-1]


def _torchserve_protos(folder: Path) -> Path:
    with zipfile.ZipFile(_torchserve_wheel()) as wheel:
        jar = io.BytesIO(wheel.read("ts/frontend/model-server.jar"))
    with zipfile.ZipFile(jar) as archive:
        for name in ("inference.proto", "management.proto"):
            (folder / name).write_bytes(archive.read(f"proto/{name}"))
    return folder


@pytest.fixture(scope="module")
def ts(tmp_path_factory):
    """TorchServe's generated messages and stubs, as a TorchServe client would have them."""
    import grpc_tools

    folder = _torchserve_protos(tmp_path_factory.mktemp("torchserve-protos"))
    includes = [str(Path(grpc_tools.__file__).parent / "_proto")]
    includes += [p for p in sys.path if (Path(p) / "google" / "rpc" / "status.proto").exists()]
    args = ["protoc", f"-I{folder}", *(f"-I{i}" for i in includes), f"--python_out={folder}",
            f"--grpc_python_out={folder}", "inference.proto", "management.proto"]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(folder))
    try:
        modules = {name: importlib.import_module(name) for name in (
            "inference_pb2", "inference_pb2_grpc", "management_pb2", "management_pb2_grpc")}
    finally:
        sys.path.remove(str(folder))
    return type("TorchServeStubs", (), modules)


@pytest.fixture(scope="module")
def inference(ts, protocol_server):
    channel = grpc.insecure_channel(protocol_server.urls["grpc_inference"])
    yield ts.inference_pb2_grpc.InferenceAPIsServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def management(ts, protocol_server):
    channel = grpc.insecure_channel(protocol_server.urls["grpc_management"])
    yield ts.management_pb2_grpc.ManagementAPIsServiceStub(channel)
    channel.close()


def test_ping(ts, inference):
    from google.protobuf import empty_pb2

    answer = inference.Ping(empty_pb2.Empty())
    assert json.loads(answer.health) == {"status": "Healthy"}


def test_predictions_match_the_rest_api(ts, inference, protocol_server):
    row = [0.5, -1.0, 2.0, 0.25]
    request = ts.inference_pb2.PredictionsRequest(model_name="mlp",
                                                  input={"data": json.dumps(row).encode()})
    answer = inference.Predictions(request)
    expected = protocol_server.post("/predictions/mlp", json=row).json()
    assert json.loads(answer.prediction) == pytest.approx(expected, rel=1e-5)
    versioned = inference.Predictions(ts.inference_pb2.PredictionsRequest(
        model_name="mlp", model_version="1.0", input={"data": json.dumps(row).encode()}))
    assert json.loads(versioned.prediction) == pytest.approx(expected, rel=1e-5)


def test_stream_predictions_sends_the_answer(ts, inference):
    request = ts.inference_pb2.PredictionsRequest(model_name="picky",
                                                  input={"body": b"fine"})
    answers = list(inference.StreamPredictions(request))
    assert [json.loads(a.prediction)["ok"] for a in answers] == ["fine"]


def test_stream_predictions2_answers_each_request_and_reports_errors_inline(ts, inference):
    def requests():
        for i, body in enumerate([b"one", b"bad", b"three"]):
            yield ts.inference_pb2.PredictionsRequest(model_name="picky", input={"body": body},
                                                      sequence_id=f"seq-{i}")
        yield ts.inference_pb2.PredictionsRequest(model_name="missing", input={"body": b"x"},
                                                  sequence_id="seq-3")

    answers = list(inference.StreamPredictions2(requests()))
    assert [a.sequence_id for a in answers] == ["seq-0", "seq-1", "seq-2", "seq-3"]
    assert json.loads(answers[0].prediction)["ok"] == "one"
    assert answers[1].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "bad input" in answers[1].status.message
    assert json.loads(answers[2].prediction)["ok"] == "three"
    assert answers[3].status.code == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.parametrize("request_args, code, fragment", [
    ({"model_name": "missing", "input": {"data": b"[1]"}}, "NOT_FOUND", "missing"),
    ({"model_name": "picky", "input": {"body": b"bad"}}, "INVALID_ARGUMENT", "bad input"),
    ({"model_name": "mlp", "model_version": "9.9", "input": {"data": b"[1,2,3,4]"}},
     "NOT_FOUND", "9.9"),
    ({"model_name": "mlp", "input": {"data": b"x" * 300000}}, "RESOURCE_EXHAUSTED", ""),
    ({"model_name": "teapot", "input": {"body": b"1"}}, "INVALID_ARGUMENT", "short and stout"),
])
def test_errors_carry_grpc_status_codes(ts, inference, request_args, code, fragment):
    with pytest.raises(grpc.RpcError) as caught:
        inference.Predictions(ts.inference_pb2.PredictionsRequest(**request_args))
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert fragment in caught.value.details()


def test_management_service_lifecycle(ts, management, inference):
    pb = ts.management_pb2
    listed = json.loads(management.ListModels(pb.ListModelsRequest()).msg)
    assert {"mlp", "picky", "tensorecho"} <= {m["modelName"] for m in listed["models"]}
    paged = json.loads(management.ListModels(pb.ListModelsRequest(limit=1)).msg)
    assert len(paged["models"]) == 1 and paged["nextPageToken"] == "1"

    registered = management.RegisterModel(pb.RegisterModelRequest(
        url="mlp2.mar", model_name="grpcmlp", initial_workers=1, synchronous=True,
        batch_size=2, max_batch_delay=50))
    assert "registered with 1 initial workers" in json.loads(registered.msg)["status"]
    try:
        described = json.loads(management.DescribeModel(
            pb.DescribeModelRequest(model_name="grpcmlp")).msg)
        assert described[0]["modelVersion"] == "2.0" and described[0]["batchSize"] == 2
        answer = inference.Predictions(ts.inference_pb2.PredictionsRequest(
            model_name="grpcmlp", input={"data": b"[1, 2, 3, 4]"}))
        assert len(json.loads(answer.prediction)) == 3

        scaled = management.ScaleWorker(pb.ScaleWorkerRequest(
            model_name="grpcmlp", min_worker=2, max_worker=2, synchronous=True))
        assert json.loads(scaled.msg)["status"].startswith("Workers scaled to 2")
        described = json.loads(management.DescribeModel(
            pb.DescribeModelRequest(model_name="grpcmlp", model_version="2.0")).msg)
        assert len(described[0]["workers"]) == 2

        default = management.SetDefault(pb.SetDefaultRequest(model_name="grpcmlp",
                                                              model_version="2.0"))
        assert "2.0" in json.loads(default.msg)["status"]
        with pytest.raises(grpc.RpcError) as caught:
            management.SetDefault(pb.SetDefaultRequest(model_name="grpcmlp",
                                                        model_version="7.0"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as caught:
            management.RegisterModel(pb.RegisterModelRequest(url="mlp2.mar",
                                                             model_name="grpcmlp"))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    finally:
        gone = management.UnregisterModel(pb.UnregisterModelRequest(model_name="grpcmlp"))
    assert "unregistered" in json.loads(gone.msg)["status"].lower()
    with pytest.raises(grpc.RpcError) as caught:
        management.DescribeModel(pb.DescribeModelRequest(model_name="grpcmlp"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        management.RegisterModel(pb.RegisterModelRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_killed_worker_fails_its_call_with_unavailable_and_serving_goes_on(
        ts, inference, protocol_server):
    import os
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor

    assert protocol_server.register("sleepy.mar", model_name="grpcvictim").status_code == 200
    try:
        workers = protocol_server.manage("GET", "/models/grpcvictim").json()[0]["workers"]
        pid = workers[0]["pid"]
        request = ts.inference_pb2.PredictionsRequest(model_name="grpcvictim",
                                                      input={"body": b"5"})
        with ThreadPoolExecutor(1) as pool:
            inflight = pool.submit(inference.Predictions, request, timeout=30)
            time.sleep(1.0)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(grpc.RpcError) as caught:
                inflight.result(timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "died" in caught.value.details()
        deadline = time.monotonic() + 60
        quick = ts.inference_pb2.PredictionsRequest(model_name="grpcvictim",
                                                    input={"body": b"0"})
        while True:  # the next calls succeed on a restarted worker
            try:
                answer = inference.Predictions(quick, timeout=30)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert json.loads(answer.prediction) == {"slept": 0.0}
    finally:
        protocol_server.manage("DELETE", "/models/grpcvictim")


def test_stream_predictions_sends_each_intermediate_answer_as_it_comes(ts, inference,
                                                                       protocol_server,
                                                                       streaming_archive):
    import time

    assert protocol_server.register(streaming_archive, model_name="grpcstream",
                                    batch_size=1).status_code == 200
    try:
        request = ts.inference_pb2.PredictionsRequest(model_name="grpcstream",
                                                      input={"data": b"gamma"})
        messages = [(time.time(), m.prediction) for m in inference.StreamPredictions(request)]
        assert [p for _, p in messages[:3]] == [b"gamma 0|", b"gamma 1|", b"gamma 2|"]
        assert len(messages) == 4
        final = json.loads(messages[3][1])
        assert final["word"] == "gamma"
        # each intermediate answer arrived while the handler was still running (0.6 s apart)
        assert messages[0][0] < final["done"] - 1.0, (messages, final)
        assert [t for t, _ in messages] == sorted(t for t, _ in messages)
    finally:
        protocol_server.manage("DELETE", "/models/grpcstream")

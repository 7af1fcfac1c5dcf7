"""Shared fixtures: a model store with real (random-weight) models and handler archives."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tsf.archives.writer import ArchiveSpec, write_archive

HANDLERS = {
    # pluggy-style handler class; reports how many requests shared its batch
    "echo_handler.py": '''
        import os
        from tsf import hookimpl

        class EchoHandler:
            @hookimpl
            def tsf_load_model(self, context):
                return "echo"

            @hookimpl
            def tsf_preprocess(self, context, requests):
                return [r.get("body", r) for r in requests]

            @hookimpl
            def tsf_inference(self, context, batch):
                return batch

            @hookimpl
            def tsf_postprocess(self, context, outputs):
                context.metrics.add_counter("echo_items", len(outputs), dimensions={"kind": "x"})
                return [{"batch": len(outputs), "index": i, "pid": os.getpid(),
                         "echo": o if not isinstance(o, bytes) else o.decode("latin-1"),
                         "request_id": context.get_request_id(i),
                         "header": context.get_request_header(i, "X-Test")}
                        for i, o in enumerate(outputs)]
    ''',
    # TorchServe-style class with initialize/handle
    "ts_handler.py": '''
        import json

        class MyHandler:
            def initialize(self, context):
                self.name = context.manifest["model"]["modelName"]
                self.initialized = True

            def handle(self, data, context):
                out = []
                for i, row in enumerate(data):
                    body = row.get("data") or row.get("body")
                    if isinstance(body, (bytes, bytearray)):
                        body = json.loads(body)
                    context.set_response_header(i, "X-Handler", "torchserve-style")
                    out.append({"model": self.name, "sum": sum(body)})
                return out
    ''',
    # TorchServe module-level function handler
    "fn_handler.py": '''
        STATE = {}

        def handle(data, context):
            if data is None:
                STATE["ready"] = True
                return None
            return [f"hello {row.get('body')}" for row in data]
    ''',
    # sleeps as long as the request asks (seconds); for timeouts and kill tests
    "sleepy_handler.py": '''
        import time

        def handle(data, context):
            if data is None:
                return None
            for row in data:
                time.sleep(float(row.get("body") or 0))
            return [{"slept": float(row.get("body") or 0)} for row in data]
    ''',
    # breaks the one-result-per-request contract
    "badlen_handler.py": '''
        def handle(data, context):
            if data is None:
                return None
            return [1, 2, 3]
    ''',
    # fails while loading
    "broken_handler.py": '''
        def handle(data, context):
            raise RuntimeError("weights are missing on purpose")
    ''',
    # rejects bad input per request, so batch isolation can be observed
    "picky_handler.py": '''
        from tsf import hookimpl
        from tsf.errors import BadRequest

        class Picky:
            @hookimpl
            def tsf_load_model(self, context):
                return "picky"

            @hookimpl
            def tsf_preprocess(self, context, requests):
                bodies = [r.get("body") for r in requests]
                bodies = [b.decode() if isinstance(b, bytes) else b for b in bodies]  # gRPC
                for i, body in enumerate(bodies):
                    if body == "bad":
                        raise BadRequest(f"request {context.get_request_id(i)}: bad input")
                return bodies

            @hookimpl
            def tsf_inference(self, context, batch):
                return batch

            @hookimpl
            def tsf_postprocess(self, context, outputs):
                return [{"ok": o, "batch": len(outputs)} for o in outputs]
    ''',
    # answers with its own status and a plain-text body instead of raising
    "teapot_handler.py": '''
        def handle(data, context):
            if data is None:
                return None
            for i in range(len(data)):
                context.set_response_status(418, "I'm a teapot", i)
            return ["short and stout"] * len(data)
    ''',
    # OIP tensors in, the same tensors out, plus BATCH: how many requests shared the batch
    "tensor_echo_handler.py": '''
        from tsf import hookimpl

        class TensorEcho:
            signature = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
                         "outputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]},
                                     {"name": "BATCH", "datatype": "INT32", "shape": [1]}]}

            @hookimpl
            def tsf_load_model(self, context):
                return "tensor-echo"

            @hookimpl
            def tsf_preprocess(self, context, requests):
                return requests

            @hookimpl
            def tsf_inference(self, context, batch):
                return batch

            @hookimpl
            def tsf_postprocess(self, context, outputs):
                import torch

                size = torch.tensor([len(outputs)], dtype=torch.int32)
                return [dict(tensors, BATCH=size) for tensors in outputs]
    ''',
}

EAGER_MODEL = '''
    import torch

    class TinyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return torch.softmax(self.fc(x), dim=-1)
'''


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def build_models(src: Path) -> dict[str, Path]:
    """Serialized models with random weights: TorchScript, eager state_dict, torch.export."""
    import torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    files = {"mlp": src / "mlp.pt"}
    torch.jit.script(mlp).save(str(files["mlp"]))
    model_py = _write(src, "tiny_net.py", EAGER_MODEL)
    namespace: dict = {}
    exec(compile(textwrap.dedent(EAGER_MODEL), str(model_py), "exec"), namespace)
    net = namespace["TinyNet"]()
    files["eager_weights"] = src / "tiny_net.pth"
    torch.save(net.state_dict(), files["eager_weights"])
    files["eager_model"] = model_py
    exported = torch.export.export(mlp, (torch.randn(2, 4),),
                                   dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
    files["exported"] = src / "mlp.pt2"
    torch.export.save(exported, str(files["exported"]))
    return files


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """A model store with every archive the integration tests use."""
    src = tmp_path_factory.mktemp("src")
    store = tmp_path_factory.mktemp("store")
    files = build_models(src)
    handlers = {name: _write(src, name, text) for name, text in HANDLERS.items()}
    cfg = _write(src, "model-config.yaml", """
        batchSize: 8
        maxBatchDelay: 300
        minWorkers: 1
        responseTimeout: 30
    """)

    def archive(name: str, **kwargs) -> None:
        write_archive(ArchiveSpec(model_name=name, export_path=str(store), force=True, **kwargs))

    archive("mlp", serialized_file=str(files["mlp"]))
    archive("mlp2", version="2.0", serialized_file=str(files["mlp"]))
    archive("eager", serialized_file=str(files["eager_weights"]),
            model_file=str(files["eager_model"]))
    archive("exported", serialized_file=str(files["exported"]))
    archive("echo", handler=str(handlers["echo_handler.py"]), config_file=str(cfg))
    archive("tsclass", handler=str(handlers["ts_handler.py"]))
    archive("fn", handler=str(handlers["fn_handler.py"]), archive_format="tgz")
    archive("fndir", handler=str(handlers["fn_handler.py"]), archive_format="no-archive")
    archive("sleepy", handler=str(handlers["sleepy_handler.py"]))
    archive("badlen", handler=str(handlers["badlen_handler.py"]))
    archive("broken", handler=str(handlers["broken_handler.py"]))
    archive("picky", handler=str(handlers["picky_handler.py"]))
    archive("nohandler", serialized_file=str(files["mlp"]), handler="object_detector")
    archive("teapot", handler=str(handlers["teapot_handler.py"]))
    archive("tensorecho", handler=str(handlers["tensor_echo_handler.py"]), config_file=str(cfg))
    signed = _write(src, "signed-config.yaml", """
        signature:
          inputs: [{name: features, datatype: FP32, shape: [-1, 4]}]
          outputs: [{name: scores, datatype: FP32, shape: [-1, 3]}]
    """)
    archive("mlpsig", serialized_file=str(files["mlp"]), config_file=str(signed))
    return store


@pytest.fixture(scope="session")
def redis_url():
    """A redis-server for the job store tests (skipped where it is not installed)."""
    from tsf.testing.redis_server import RedisServer

    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.stop()

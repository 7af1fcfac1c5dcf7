"""The in-process handler harness: a handler's batches run through the worker's own
``BatchRunner``, without a server or worker processes."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..workers.messages import PREDICT, Answer, Batch, Part, Request


class HarnessAnswer:
    """One request's answer from :class:`HandlerHarness`: status, content type, headers, body."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.status: int = answer.status
        self.content_type: str = answer.ctype
        self.headers: dict[str, str] = answer.headers
        self.body = answer.body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def tensors(self) -> dict[str, Any]:
        """A KServe v2 / OIP answer's output tensors by name (``torch.Tensor``, or nested lists
        of ``bytes`` for ``BYTES`` outputs)."""
        from ..oip.tensors import TENSOR_CTYPE, TENSORS_CTYPE, decode_tensor

        if self.content_type != TENSORS_CTYPE or self.answer.tensors is None:
            raise ValueError(f"not an OIP tensor answer: {self!r}")
        out, offset = {}, 0
        for descriptor in self.answer.tensors:
            end = offset + descriptor["size"]
            name = descriptor["name"]
            out[name] = decode_tensor(Part(name, self.body[offset:end], TENSOR_CTYPE,
                                           datatype=descriptor["datatype"],
                                           shape=descriptor["shape"], encoding="raw"))
            offset = end
        return out

    def __repr__(self) -> str:
        return f"HarnessAnswer({self.status}, {self.content_type!r}, {self.body[:80]!r})"


def harness_request(body: Any, content_type: str | None = None,
                    headers: dict[str, str] | None = None,
                    params: dict[str, str] | None = None) -> Request:
    """The worker-side message of one request: bytes as they are, str as text, anything else as
    a JSON body; ``body`` may also be ``{part name: bytes}`` for a multipart-style request."""
    if isinstance(body, dict) and body and all(isinstance(v, (bytes, bytearray))
                                                  for v in body.values()):
        parts = [Part(name, bytes(value), content_type or "application/octet-stream")
                 for name, value in body.items()]
    else:
        if isinstance(body, (bytes, bytearray)):
            data, default = bytes(body), "application/octet-stream"
        elif isinstance(body, str):
            data, default = body.encode(), "text/plain"
        else:
            data, default = json.dumps(body).encode(), "application/json"
        parts = [Part("body", data, content_type or default)]
    return Request("harness", parts, dict(headers or {}), dict(params or {}))


def oip_request(inputs: dict[str, Any], headers: dict[str, str] | None = None,
                params: dict[str, str] | None = None) -> Request:
    """The worker-side message of one KServe v2 / OIP request: ``{input name: tensor}`` (a
    ``torch.Tensor``, anything ``torch.as_tensor`` takes, or lists of str/bytes for ``BYTES``),
    each input passed as binary data as the front end passes it."""
    from ..oip.tensors import PROTOCOL, TENSOR_CTYPE, encode_outputs

    parts = []
    for name, value in inputs.items():
        [descriptor], raw = encode_outputs({name: value}, name)
        parts.append(Part(name, raw, TENSOR_CTYPE, datatype=descriptor["datatype"],
                          shape=descriptor["shape"], encoding="raw"))
    return Request("harness", parts, dict(headers or {}), dict(params or {}),
                   protocol=PROTOCOL)


class HandlerHarness:
    """Runs a handler's batches in this process, through the worker's own loading code and
    ``BatchRunner`` (the same decode, stage hooks, one-bad-request isolation and encoding as a
    worker process), with no socket and no server.  Made for plugin and handler unit tests::

        harness = HandlerHarness.from_archive("mnist.mar")
        [answer] = harness.run([b"<png bytes>"])
        assert answer.status == 200 and answer.json()[0] in range(10)

    ``handler`` is a name (``"base"``, a plugin's handler, ``"file.py"`` in ``model_dir``) or a
    handler instance.  Each ``run`` (``run_oip`` for KServe v2 / OIP tensors, ``run_requests``
    for a mix) is one batch.
    """

    def __init__(self, model_dir: str | os.PathLike, handler: Any = "", *,
                 manifest: dict | None = None, model_config: dict | None = None,
                 model_name: str = "model", model_version: str = "1.0",
                 batch_size: int = 8) -> None:
        from ..runtime.batch_runner import BatchRunner
        from ..runtime.main import load

        name = handler if isinstance(handler, str) else ""
        manifest = manifest or {"runtime": "python", "model": {
            "modelName": model_name, "modelVersion": model_version, "handler": name}}
        spec = {"model_name": model_name, "model_version": model_version,
                "model_dir": str(model_dir), "manifest": manifest,
                "model_config": model_config or {}, "handler": name,
                "batch_size": batch_size, "worker_id": "harness", "worker_index": 0}
        self.pm, self.context = load(spec, None if isinstance(handler, str) else handler)
        self.runner = BatchRunner(self.pm, self.context)
        self._ids = 0

    @classmethod
    def from_archive(cls, path: str | os.PathLike, workspace: str | os.PathLike | None = None,
                     **kwargs: Any) -> "HandlerHarness":
        """A harness for an archive (``.mar``, ``.tar.gz`` or folder), unpacked as tsf does."""
        from ..archives.reader import Limits, open_archive

        target = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="tsf-harness-"))
        archive = open_archive(Path(path), target, Limits())
        kwargs.setdefault("model_name", archive.model_name or "model")
        kwargs.setdefault("model_version", archive.model_version)
        return cls(archive.model_dir, archive.handler, manifest=archive.manifest,
                   model_config=archive.model_config, **kwargs)

    def run(self, bodies: list[Any], kind: str = "predict",
            content_type: str | None = None, headers: dict[str, str] | None = None,
            params: dict[str, str] | None = None) -> list[HarnessAnswer]:
        """One batch of requests (see :func:`harness_request` for what a body may be)."""
        return self.run_requests([harness_request(body, content_type, headers, params)
                                  for body in bodies], kind)

    def run_oip(self, inputs: list[dict[str, Any]], headers: dict[str, str] | None = None,
                params: dict[str, str] | None = None) -> list[HarnessAnswer]:
        """One batch of KServe v2 / OIP requests, each ``{input name: tensor}`` (see
        :func:`oip_request`); :meth:`HarnessAnswer.tensors` reads the answers."""
        return self.run_requests([oip_request(request, headers, params) for request in inputs])

    def run_requests(self, requests: list[Request], kind: str = PREDICT) -> list[HarnessAnswer]:
        """One batch of requests made by :func:`harness_request` or :func:`oip_request`."""
        batch = []
        for request in requests:
            self._ids += 1
            batch.append(dataclasses.replace(request, id=f"harness-{self._ids}", kind=kind))
        return [HarnessAnswer(answer) for answer in self.runner.run(Batch(batch)).answers]

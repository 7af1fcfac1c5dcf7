"""Sample inputs for ``tsf optimize``: the archive's handler loaded in this process, and files
turned into model inputs by that handler's own preprocessing, as a worker would."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from ..archives.reader import Limits, ModelArchive, open_archive
from ..errors import BadRequest
from ..runtime.batch_runner import decode_part
from ..runtime.main import load
from ..workers.messages import Part

CONTENT_TYPES = {".json": "application/json", ".txt": "text/plain"}


class LoadedArchive:
    """An archive unpacked under ``workspace`` with its handler and model loaded here."""

    def __init__(self, path: Path, workspace: Path, device: str = "cpu") -> None:
        self.archive: ModelArchive = open_archive(path, workspace, Limits())
        config = dict(self.archive.model_config)
        if device != "cpu":
            config.setdefault("deviceType", "gpu")
        spec = {"model_name": self.archive.model_name or "model",
                "model_version": self.archive.model_version, "model_dir":
                str(self.archive.model_dir), "manifest": self.archive.manifest,
                "model_config": config, "handler": self.archive.handler,
                "batch_size": int(config.get("batchSize", 1)), "worker_id": "optimize",
                "worker_index": 0}
        self.pm, self.context = load(spec)

    @property
    def model(self) -> Any:
        return self.context.model

    def preprocess(self, body: bytes, content_type: str, name: str) -> Any:
        """One request's body through the handler's preprocessing: the model's input tensor
        for it (with its batch dimension of 1)."""
        import torch

        request = {"body": decode_part(Part("body", body, content_type))}
        ctx = self.context
        ctx.begin_batch([name], [{"content-type": content_type}])
        handler = ctx.handler
        instance = getattr(handler, "instance", None)  # a TorchServe-style handler's own
        if instance is not None and hasattr(instance, "preprocess"):
            instance.context = ctx
            value = instance.preprocess([request])
        else:
            value = self.pm.hook.tsf_preprocess(context=ctx, requests=[request])
        if not isinstance(value, torch.Tensor):
            raise BadRequest(f"the handler's preprocessing of {name} gives "
                             f"{type(value).__name__}, not one tensor: tsf optimize handles "
                             "models whose input is one batched tensor")
        return value


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or \
        "application/octet-stream"


def sample_batch(loaded: LoadedArchive, files: list[Path], input_shape: list[int] | None,
                 count: int) -> tuple[Any, bool]:
    """The model inputs of the sample files, stacked (``N x ...``), and whether they are real
    samples (``False``: ``count`` random inputs of ``input_shape``)."""
    import torch

    if files:
        tensors = []
        for path in files:
            if not path.is_file():
                raise BadRequest(f"sample input {path} is not a file")
            tensors.append(loaded.preprocess(path.read_bytes(), content_type(path), path.name))
        shapes = {tuple(t.shape[1:]) for t in tensors}
        if len(shapes) > 1:
            raise BadRequest("the sample inputs preprocess to tensors of different shapes "
                             f"({', '.join(str(list(s)) for s in sorted(shapes))}); the model "
                             "is exported for one sample shape")
        return torch.cat(tensors).to(loaded.context.device), True
    if not input_shape:
        raise BadRequest("tsf optimize needs --sample-input FILE... (inputs as clients send "
                         "them) or --input-shape (random inputs of that shape, one sample's)")
    generator = torch.Generator().manual_seed(0)
    return torch.randn(count, *input_shape, generator=generator).to(loaded.context.device), False

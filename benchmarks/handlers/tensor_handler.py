"""One handler file that serves unchanged on tsf and on TorchServe (module-level ``handle``).

The model is a ``torch.export`` program or an AOTInductor package (``.pt2``), TorchScript's
successors.

Input: a JSON list of numbers, or raw float32 bytes (``application/octet-stream``); a sample of
3*224*224 values is viewed as an image tensor.  Output: the arg-max class per sample.
"""

import os
import zipfile

import torch

_model = None
IMAGE = 3 * 224 * 224


def _load(context):
    global _model
    model_dir = context.system_properties["model_dir"]
    path = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
    _model = load_program(path)


def load_program(path):
    """A ``.pt2``: an AOTInductor package (compiled) or a ``torch.export`` program."""
    with zipfile.ZipFile(path) as archive:
        if any("/data/aotinductor/" in name for name in archive.namelist()):
            return torch._inductor.aoti_load_package(path)
    return torch.export.load(path).module()


def _tensor(row):
    value = row.get("data") if row.get("data") is not None else row.get("body")
    if isinstance(value, (bytes, bytearray)):
        return torch.frombuffer(bytearray(value), dtype=torch.float32)
    return torch.tensor(value, dtype=torch.float32)


def handle(data, context):
    if _model is None:
        _load(context)
    if data is None:
        return None
    batch = torch.stack([_tensor(row) for row in data])
    if batch.shape[1] == IMAGE:
        batch = batch.view(-1, 3, 224, 224)
    with torch.inference_mode():
        return _model(batch).argmax(dim=1).tolist()

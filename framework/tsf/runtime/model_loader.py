"""Loading a model's weights in a worker: eager (class + state_dict), ``torch.export`` programs,
AOTInductor packages and TorchScript.

Only ever imported inside worker processes: it imports torch.

* ``modelFile`` in the manifest: the single ``nn.Module`` subclass defined in that file is built
  with no arguments and the serialized state_dict is loaded into it with ``weights_only=True``
  (pickled whole models are refused: loading them could run arbitrary code).
* ``.pt2``: an AOTInductor package (compiled code, ``torch._inductor.aoti_load_package``) or a
  ``torch.export`` program, told apart by their contents (:mod:`tsf.runtime.pt2`).
* otherwise TorchScript, falling back to ``torch.export``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..archives.reader import confined_path
from ..errors import ModelLoadError
from .handler_resolver import import_file
from .pt2 import load_pt2


def _module_class(module: ModuleType, wanted: str | None) -> type:
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if obj.__module__ == module.__name__ and issubclass(obj, torch.nn.Module)]
    if wanted:
        classes = [c for c in classes if c.__name__ == wanted]
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise ModelLoadError(
            f"the model file must define exactly one torch.nn.Module subclass (found: {names}); "
            "set handler.model_class in model-config.yaml to choose one")
    return classes[0]


def _load_state_dict(path: Path, device: str) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{path.name} could not be loaded with weights_only=True ({type(exc).__name__}: "
            f"{exc}); save a state_dict (torch.save(model.state_dict(), ...)), not a pickled "
            "model") from None
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path.name} does not hold a state_dict")
    return state




def load_model(context: Any) -> Any:
    """Load the model an archive describes, on ``context.device``, in eval mode."""
    model_info = context.manifest.get("model", {})
    model_dir = Path(context.model_dir)
    serialized = model_info.get("serializedFile")
    model_file = model_info.get("modelFile")
    # the front end refused paths leading out of the folder at register; checked again here
    path = confined_path(model_dir, serialized, "serializedFile", ModelLoadError) \
        if serialized else None
    if path is not None and not path.is_file():
        raise ModelLoadError(f"serialized file {serialized!r} is not in the archive")
    device = context.device
    if model_file:
        cls = _module_class(import_file(confined_path(model_dir, model_file, "modelFile",
                                                      ModelLoadError)),
                            context.handler_config.get("model_class"))
        model = cls()
        if path is not None:
            try:
                model.load_state_dict(_load_state_dict(path, device))
            except RuntimeError as exc:
                raise ModelLoadError(f"state_dict does not fit {cls.__name__}: {exc}") from None
    elif path is None:
        raise ModelLoadError("the manifest names no serializedFile (and no modelFile)")
    elif path.suffix == ".pt2":
        model = load_pt2(path, device)
    else:
        try:
            model = torch.jit.load(str(path), map_location=device)
        except Exception as jit_error:
            try:
                model = load_pt2(path, device)
            except Exception:
                raise ModelLoadError(
                    f"{path.name} is neither TorchScript nor a torch.export program "
                    f"({jit_error}); for a state_dict, archive the model class with "
                    "--model-file") from None
    try:
        model = model.to(device)
    except Exception:  # exported programs may refuse .to(); they stay where they were saved
        pass
    try:
        model.eval()
    except Exception:  # torch.export modules do not support eval() in every release
        pass
    return model

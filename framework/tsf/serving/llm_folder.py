"""``tsf serve --llm MODEL_DIR``: a Hugging Face model folder served without an archive, as
TorchServe's ``ts.llm_launcher`` does.

The folder (``config.json``, weights, tokenizer files, and optionally a model-config.yaml) is
registered in place as a model with the ``llm`` handler, named by ``--llm-name`` (default: the
folder's name), its engine chosen by ``--llm-engine`` unless its model-config.yaml names one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..archives.reader import ModelArchive, read_model_config
from ..config.settings import ServerConfig
from ..errors import BadRequest, TsfError
from .manager_types import RegisterRequest

log = logging.getLogger("tsf")

ENGINES = ("transformers", "vllm")


def llm_archive(config: ServerConfig) -> ModelArchive:
    """The folder ``llm_model_dir`` as an archive with the ``llm`` handler (400 if it is not
    a model folder)."""
    folder = Path(config.llm_model_dir).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise BadRequest(f"--llm {config.llm_model_dir}: not a Hugging Face model folder (no "
                         "config.json)")
    if config.llm_engine not in ENGINES:
        raise BadRequest(f"--llm-engine must be one of {', '.join(ENGINES)}, got "
                         f"{config.llm_engine!r}")
    name = config.llm_name or folder.name
    manifest = {"runtime": "python",
                "model": {"modelName": name, "modelVersion": "1.0", "handler": "llm"}}
    model_config = dict(read_model_config(folder, manifest))
    handler = model_config.get("handler")
    handler = dict(handler) if isinstance(handler, dict) else {}
    handler.setdefault("engine", config.llm_engine)
    model_config["handler"] = handler
    return ModelArchive(model_dir=folder, manifest=manifest, model_config=model_config)


async def register_llm_folder(manager: object, config: ServerConfig) -> None:
    """Register ``llm_model_dir`` at start (its workers load in the background); a failure is
    logged and counts in health, as for ``--models``."""
    name = config.llm_name or Path(config.llm_model_dir).name
    try:
        archive = llm_archive(config)
        await manager.register_unpacked(  # type: ignore[attr-defined]
            RegisterRequest(str(archive.model_dir), model_name=archive.model_name,
                            synchronous=False), archive, loaded_at_startup=True)
    except TsfError as exc:
        log.error("--llm %s not registered: %s", config.llm_model_dir, exc.message)
        manager.startup_failed(name, exc.message)  # type: ignore[attr-defined]

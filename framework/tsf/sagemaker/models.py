"""Finding and registering the models SageMaker puts in the container.

A model folder (``/opt/ml/model``, or ``/opt/ml/models/<name>/model`` on a multi-model endpoint)
holds one ``.mar``, an unpacked archive (``MAR-INF/``), or a ``model.tar.gz``'s contents: weights
and optionally ``code/inference.py`` and ``code/requirements.txt``.  The last kind is served by
the built-in ``sagemaker`` handler.  ``code/requirements.txt`` is installed with pip before the
model loads, as SageMaker's toolkit does, only when ``sagemaker_install_requirements`` is on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from ..archives.sources import inside
from ..errors import BadRequest, Forbidden, ModelLoadError, ModelNotFound, TsfError
from ..serving.manager_types import ManagerResult, RegisterRequest
from ..workers.spawn import run

log = logging.getLogger("tsf")

SINGLE_MODEL_NAME = "model"  # the name SageMaker's toolkit gives the one model
PIP_TIMEOUT = 900.0


def find_model(folder: Path) -> tuple[Path, str | None]:
    """What to register for a SageMaker model folder, and the handler it needs (if any)."""
    if not folder.is_dir():
        raise ModelNotFound(f"model folder {folder} does not exist")
    if (folder / "MAR-INF" / "MANIFEST.json").is_file():
        return folder, None
    mars = sorted(p for p in folder.glob("*.mar") if p.is_file())
    if len(mars) > 1:
        raise BadRequest(f"{folder} holds {len(mars)} .mar files; SageMaker serves one model "
                         "per folder")
    if mars and not (folder / "code").is_dir():
        return mars[0], None
    if not any(folder.iterdir()):
        raise ModelNotFound(f"model folder {folder} is empty")
    return folder, "sagemaker"


async def install_requirements(folder: Path, config: Any) -> None:
    """``pip install -r code/requirements.txt`` for a local model folder, when allowed."""
    requirements = folder / "code" / "requirements.txt"
    if not requirements.is_file():
        return
    if not config.sagemaker_install_requirements:
        log.warning("%s not installed: installing packages at start is off (set "
                    "TSF_SAGEMAKER_INSTALL_REQUIREMENTS=true to allow it)", requirements)
        return
    command = [sys.executable, "-m", "pip", "install", "--no-input",
               "--disable-pip-version-check", "-r", str(requirements)]
    log.info("installing %s: %s", requirements, " ".join(command))
    try:
        code, output = await run(command, PIP_TIMEOUT)
    except asyncio.TimeoutError:
        raise ModelLoadError(f"installing {requirements} took over {PIP_TIMEOUT:g} s") from None
    text = output.strip()
    if code:
        tail = " | ".join(text.splitlines()[-5:])
        raise ModelLoadError(f"installing {requirements} failed (pip exit {code}): {tail}")
    log.info("installed %s: %s", requirements, text.splitlines()[-1] if text else "done")


async def register_folder(manager: Any, config: Any, name: str, folder: Path,
                          synchronous: bool, loaded_at_startup: bool = False) -> ManagerResult:
    """Register the model in ``folder`` under ``name`` (the folder must be in the model store)."""
    if not inside(folder, Path(config.model_store)):
        raise Forbidden(f"model folder {folder} is outside the model store "
                        f"{config.model_store}")
    source, handler = find_model(folder)
    await install_requirements(folder, config)
    request = RegisterRequest(source.resolve().as_uri(), model_name=name, handler=handler,
                              synchronous=synchronous)
    return await manager.register(request, loaded_at_startup=loaded_at_startup)


async def register_sagemaker_model(manager: Any, config: Any) -> None:
    """At start (single-model endpoints): register ``/opt/ml/model`` as ``model``.

    A model that cannot be registered is logged; ``/ping`` then answers 503 with the reason.
    """
    if config.sagemaker_multi_model:
        return  # SageMaker loads each model through POST /models
    folder = Path(config.sagemaker_model_dir)
    try:
        await register_folder(manager, config, SINGLE_MODEL_NAME, folder, synchronous=False,
                              loaded_at_startup=True)
    except TsfError as exc:
        log.error("SageMaker model %s not registered: %s", folder, exc.message)

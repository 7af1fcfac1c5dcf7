"""Rolling update: a serving model version's archive replaced without a gap in service.

New workers start (and warm up) beside the old ones; once they are ready, the registry sends
requests to them and the old workers finish what was queued for them, then stop.  If the new
workers fail to load, they are removed and the old ones keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..errors import ModelLoadError, ServiceUnavailable
from .registry import ModelVersion, Registry

log = logging.getLogger("tsf.manager")  # part of the model lifecycle the manager logs


async def replace(registry: Registry, old: ModelVersion, new: ModelVersion, workers: int
                  ) -> None:
    """Start ``workers`` workers for ``new``, then put it in ``old``'s place in the registry.

    Raises ModelLoadError, after removing ``new``, when its workers fail to load.
    """
    try:
        await new.pool.scale(workers)
    except ModelLoadError as exc:
        log.error("rolling update of %s version %s failed; the old archive keeps serving: %s",
                  new.name, new.version, exc)
        await new.batcher.stop(ServiceUnavailable("the update failed"))
        await new.pool.close()
        if new.owned_dir != old.owned_dir:
            new.remove_files()
        raise ModelLoadError(f"rolling update of model {new.name} version {new.version} "
                             f"failed, the old archive keeps serving: {exc.message}") from None
    registry.replace(new)  # from here on, requests are queued on the new workers
    new.pool.on_change()  # its figures are now the version's
    log.info("model %s version %s: %d new workers serving %s; retiring the old ones",
             new.name, new.version, workers, new.url)


async def retire(registry: Registry, old: ModelVersion) -> None:
    """Let the replaced version's workers answer what was queued for them, then stop them."""
    deadline = time.monotonic() + old.settings.response_timeout
    while len(old.queue) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await old.batcher.stop(ServiceUnavailable(f"model {old.name} version {old.version} "
                                              "was replaced; retry"))
    await old.pool.close()
    if old.owned_dir is not None and \
            not any(mv.owned_dir == old.owned_dir for mv in registry):
        old.remove_files()

"""Built-in storage plugin: archives from the model store, ``file://`` and ``http(s)://`` URLs.

Any URL with a scheme must match one of the ``allowed_urls`` regexes, except ``file://`` paths
inside the model store.  With the default (empty) allow-list only the model store is reachable:
remote URLs are refused with 403, closing the hole TorchServe's permissive default left open
(CVE-2023-43654).
"""

from __future__ import annotations

import logging
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from . import hookimpl
from .errors import BadRequest, Forbidden, InvalidArchive, ModelNotFound

log = logging.getLogger(__name__)
DOWNLOAD_TIMEOUT = 60


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_allowed(url: str, config: Any) -> None:
    """Raise Forbidden unless ``url`` may be fetched under the configured allow-list."""
    scheme = urlsplit(url).scheme
    if not scheme:
        return
    if scheme == "file" and config.model_store and \
            _inside(Path(unquote(urlsplit(url).path)), Path(config.model_store)):
        return
    if any(re.fullmatch(pattern, url) for pattern in config.allowed_url_patterns):
        return
    raise Forbidden(f"model URL {url!r} is not allowed: only the model store is reachable unless "
                    "allowed_urls permits the URL")


def _from_model_store(name: str, config: Any) -> Path:
    if not config.model_store:
        raise ModelNotFound(f"no model store is configured to look up {name!r}")
    store = Path(config.model_store)
    candidate = store / name
    if Path(name).is_absolute() or ".." in Path(name).parts or not _inside(candidate, store):
        raise BadRequest(f"model file name {name!r} must stay inside the model store")
    if not candidate.exists():
        raise ModelNotFound(f"model archive {name!r} is not in the model store")
    return candidate


def _download(url: str, dest: Path, max_bytes: int) -> Path:
    name = Path(urlsplit(url).path).name or "model.mar"
    target = dest / name
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, \
                open(target, "wb") as out:
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise InvalidArchive(f"download of {url} exceeds {max_bytes} bytes")
                out.write(chunk)
    except OSError as exc:
        raise BadRequest(f"could not download {url}: {exc}") from None
    log.info("downloaded %s (%d bytes)", url, total)
    return target


@hookimpl(trylast=True)
def tsf_fetch_archive(url: str, dest: str, config: Any) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme:
        return str(_from_model_store(url, config))
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        if not path.exists():
            raise ModelNotFound(f"{path} does not exist")
        return str(path)
    if parts.scheme in ("http", "https"):
        return str(_download(url, Path(dest), config.max_archive_size))
    return None

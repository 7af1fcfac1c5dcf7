"""Built-in storage plugin: the ``tsf_fetch_archive`` hook for model-store names, ``file://``
and ``http(s)://`` URLs.

The allow-list, the download cache and the ``sha256`` pin are applied around every storage
plugin by :mod:`tsf.archives.sources`.  Here, every HTTP redirect is checked against the
allow-list too, so an allowed server cannot bounce tsf to an internal address.  Downloads are
streamed to disk under ``max_archive_size`` and ``download_timeout``, with a progress line every
10%.
"""

from __future__ import annotations

import logging
import tempfile
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import hookimpl
from ..errors import BadRequest, InvalidArchive, ModelNotFound, TsfError
from .sources import ARCHIVE_SUFFIXES, check_allowed, inside

log = logging.getLogger("tsf.storage")
PROGRESS_STEPS = 10


def _from_model_store(name: str, config: Any) -> Path:
    if not config.model_store:
        raise ModelNotFound(f"no model store is configured to look up {name!r}")
    store = Path(config.model_store)
    candidate = store / name  # an absolute path inside the store works too, as in TorchServe
    if ".." in Path(name).parts or not inside(candidate, store):
        raise BadRequest(f"model file name {name!r} must stay inside the model store")
    if not _exists(candidate, name):
        raise ModelNotFound(f"model archive {name!r} is not in the model store")
    return candidate


def _exists(path: Path, name: str) -> bool:
    """Whether ``path`` exists; a name the file system cannot hold is the client's error."""
    try:
        return path.exists()
    except OSError as exc:  # ENAMETOOLONG, ELOOP through links, ...
        raise BadRequest(f"model file name {name[:200]!r} is not usable: "
                         f"{exc.strerror or exc}") from None


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the allow-list permits."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        check_allowed(newurl, self.config)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download(url: str, dest: Path, config: Any) -> Path:
    """Stream ``url`` into ``dest`` under the size limit and timeout; return the file."""
    known = [s for s in Path(urlsplit(url).path).suffixes[-2:] if s in ARCHIVE_SUFFIXES]
    suffix = "".join(known) or ".mar"
    max_bytes = config.max_archive_size
    opener = urllib.request.build_opener(_CheckedRedirects(config))
    shown = loggable_url(url)
    log.info("downloading %s", shown)
    target = Path(tempfile.mkstemp(prefix="download-", suffix=suffix, dir=dest)[1])
    total = 0
    try:
        with opener.open(url, timeout=config.download_timeout) as response, \
                open(target, "wb") as out:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise InvalidArchive(f"{shown} is {declared} bytes, over max_archive_size "
                                     f"({max_bytes} bytes)")
            next_report = declared // PROGRESS_STEPS if declared else 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise InvalidArchive(f"download of {shown} exceeds max_archive_size "
                                         f"({max_bytes} bytes)")
                out.write(chunk)
                if next_report and total >= next_report:
                    log.info("downloading %s: %d%% (%d of %d bytes)", shown,
                             100 * total // declared, total, declared)
                    next_report += declared // PROGRESS_STEPS
    except TsfError:
        target.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as exc:
        target.unlink(missing_ok=True)
        raise BadRequest(f"could not download {shown}: {exc}") from None
    log.info("downloaded %s (%d bytes)", shown, total)
    return target


def loggable_url(url: str) -> str:
    """Where ``url`` points, for the log: no user, password or query (a presigned URL's
    signature is in its query)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # host and port as written, without the userinfo
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{query}"


@hookimpl(trylast=True)
def tsf_fetch_archive(url: str, dest: str, config: Any) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme:
        return str(_from_model_store(url, config))
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        if not _exists(path, str(path)):
            raise ModelNotFound(f"{path} does not exist")
        return str(path)
    if parts.scheme in ("http", "https"):
        return str(download(url, Path(dest), config))
    return None

"""Where model archives come from: the allow-list, the storage plugins, the download cache and
the ``sha256`` pin.

Any URL with a scheme must match one of the ``allowed_urls`` regexes, except ``file://`` paths
inside the model store.  With the default (empty) allow-list only the model store is reachable:
remote URLs are refused with 403, closing the hole TorchServe's permissive default left open
(CVE-2023-43654).  A URL that passes goes to the storage plugins (``tsf_fetch_archive``; the
built-in one is :mod:`tsf.archives.storage`).  A file a plugin downloaded is kept in
``<workspace>/cache/<sha256><suffix>``, one copy per content.  A ``sha256`` given on register is
checked before the archive is opened; a mismatch removes the copy that fetch downloaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pluggy

from ..errors import BadRequest, Forbidden

ARCHIVE_SUFFIXES = (".mar", ".tar", ".gz", ".tgz", ".zip")


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves (links followed) to somewhere inside ``folder``."""
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
            inside(Path(unquote(urlsplit(url).path)), Path(config.model_store)):
        return
    if any(re.fullmatch(pattern, url) for pattern in config.allowed_url_patterns):
        return
    raise Forbidden(f"model URL {url!r} is not allowed: only the model store is reachable unless "
                    "allowed_urls permits the URL")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def keep_in_cache(path: Path, cache: Path) -> tuple[Path, str, bool]:
    """Move a downloaded archive to ``cache/<sha256><suffix>`` (one copy per content).

    Returns the cached path, the digest computed on the way, and whether this call created it
    (a copy that was already there belongs to an earlier registration).
    """
    cache.mkdir(parents=True, exist_ok=True)
    suffix = "".join(s for s in path.suffixes if s in ARCHIVE_SUFFIXES)
    digest = file_sha256(path)
    target = cache / f"{digest}{suffix or '.mar'}"
    if target.exists():
        path.unlink()
        return target, digest, False
    path.replace(target)
    return target, digest, True


def parse_sha256(expected: str) -> str:
    """A register call's ``sha256`` as lower-case hex; checked before anything is fetched."""
    wanted = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", wanted):
        raise BadRequest("sha256 must be 64 hexadecimal digits")
    return wanted


def verify_sha256(path: Path, wanted: str, digest: str | None = None) -> None:
    """Refuse the archive unless its SHA-256 is ``wanted``.

    ``digest`` is the archive's digest when it was just computed (a download); otherwise the
    file is hashed here.  A file's name is never trusted as its digest.
    """
    if path.is_dir():
        raise BadRequest("sha256 applies to archive files, not to an unpacked model folder")
    actual = digest or file_sha256(path)
    if not hmac.compare_digest(actual, wanted):
        raise BadRequest(f"archive digest mismatch: expected sha256 {wanted}, got {actual}; "
                         "nothing was loaded")


@dataclass(frozen=True)
class FetchedArchive:
    """An archive ready to open, and the cached copy this fetch created (``fresh``), if any:
    the one to delete when the archive is refused, since no registration uses it."""

    path: Path
    fresh: Path | None = None

    def discard_fresh(self) -> None:
        """Delete the copy this fetch created (nothing when it reused a cached one)."""
        if self.fresh is not None:
            self.fresh.unlink(missing_ok=True)


class ArchiveSources:
    """Fetches archives for registration: allow-list, storage plugins, cache, digest check."""

    def __init__(self, config: Any, pm: pluggy.PluginManager, workspace: Path) -> None:
        self.config = config
        self.pm = pm
        self.downloads = workspace / "downloads"
        self.cache = workspace / "cache"

    async def fetch(self, url: str, sha256: str | None = None) -> FetchedArchive:
        """The archive behind ``url``: allowed, fetched, cached by content, digest checked."""
        check_allowed(url, self.config)
        wanted = parse_sha256(sha256) if sha256 else None
        self.downloads.mkdir(parents=True, exist_ok=True)
        found = await asyncio.to_thread(self.pm.hook.tsf_fetch_archive, url=url,
                                        dest=str(self.downloads), config=self.config)
        if found is None:
            raise BadRequest(f"no storage plugin handles the URL {url!r}")
        fetched, digest = FetchedArchive(Path(found)), None
        if fetched.path.is_file() and fetched.path.resolve().parent == self.downloads.resolve():
            path, digest, created = await asyncio.to_thread(keep_in_cache, fetched.path,
                                                            self.cache)
            fetched = FetchedArchive(path, path if created else None)
        if wanted:
            try:
                await asyncio.to_thread(verify_sha256, fetched.path, wanted, digest)
            except BaseException:
                fetched.discard_fresh()
                raise
        return fetched

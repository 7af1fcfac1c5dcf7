"""Keeping the front end's resident memory near what it holds, not what it once held.

Request and response bodies pass through the front end; after a burst of large ones, glibc's
malloc keeps their memory in the heap (its mmap threshold grows with every large free), so
the resident size stays at the burst's peak.  Fixing the threshold makes every buffer over it
its own mapping, returned to the system when freed.  Workers are separate processes and keep
glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024

log = logging.getLogger("tsf")


def release_large_buffers(threshold: int = MMAP_THRESHOLD) -> bool:
    """Make buffers over ``threshold`` bytes separate mappings (glibc only); True if set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused")
    return ok

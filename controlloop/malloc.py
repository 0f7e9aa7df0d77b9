"""glibc malloc settings for the long-running daemon (a no-op elsewhere).

glibc gives each thread that allocates its own arena (up to 8 per core), and a freed
block in one can only be reused by that arena's threads; the daemon's threads (the
scheduler's, the HTTP servers', the actuation pool) each leave a cycle's freed memory
behind in theirs. At 3,000 servers two arenas held the daemon 20-25 MiB lower
(docs/benchmarks.md), the setting Python services in containers commonly use. After
each cycle the freed heap is handed back to the kernel (``malloc_trim``), so the
resident size between cycles is what is live.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
DAEMON_ARENAS = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The process's own symbols: glibc's malloc functions where it is the C library."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: Windows has no "the process" handle
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(arenas: int = DAEMON_ARENAS) -> bool:
    """Cap glibc's malloc arenas, unless MALLOC_ARENA_MAX is set (the user's choice wins).
    Call before the daemon starts its threads. True if the cap was set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_ARENA_MAX, arenas))
    log.debug("malloc arenas capped at %d: %s", arenas, ok)
    return ok


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel (glibc ``malloc_trim``)."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))

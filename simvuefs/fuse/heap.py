"""Give freed heap memory back to the system (glibc only; elsewhere every call does nothing).

Why (docs/reliability.md "Memory and files written"): the mount lists a directory again at
each metadata TTL. Parsing a listing of 10,000 artifacts allocates its body, the decoded
text and a new record per artifact beside the old ones; once the new listing replaces the
old one, glibc keeps most of what was freed (pages inside its heaps, below live objects),
so the resident size follows the peaks of the listings ever parsed instead of what is
alive. ``malloc_trim(0)`` hands every free page of every heap back (``MADV_DONTNEED``).

Invariants: nothing here changes what is allocated or alive, only what stays resident;
:func:`release_freed` is cheap next to the listing it follows (it walks the heaps' free
lists, about a millisecond per 10 MiB freed) and never raises; :func:`limit_arenas` is
called once, before the daemon starts worker threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

ARENAS = 2
"""glibc heaps (arenas) for the daemon's threads: by default up to 8 per core, one per
thread that allocates (spool I/O, hashing, DNS), each keeping its own freed pages."""
_M_ARENA_MAX = -8  # mallopt parameter, <malloc.h>


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def limit_arenas(arenas: int = ARENAS) -> None:
    """Use at most *arenas* glibc heaps for all threads (``mallopt(M_ARENA_MAX)``)."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, arenas):
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)


def release_freed() -> None:
    """Return the free pages of every glibc heap to the system (``malloc_trim(0)``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)

"""Page-aligned buffers for ``O_DIRECT`` I/O, reused so that their pages are not new each time.

The spool (``write/direct.py``) writes past the page cache, and the upload reads it back the
same way (``backends/transport.py``): on a VM that hands freed memory back to its host,
every new page costs a host fault, so the bytes go through buffers that stay mapped
(docs/performance.md, "upload (session 7)").

Invariants:

- A buffer is an anonymous map of :attr:`AlignedBuffers.size` bytes: page-aligned, hence
  aligned to :data:`ALIGN`, as ``O_DIRECT`` requires of addresses.
- :meth:`AlignedBuffers.take` hands a buffer to one user at a time; at most ``max_idle``
  buffers are kept between uses (one more per user at the moment). Thread-safe.
"""

from __future__ import annotations

import mmap
import threading

ALIGN = 4096
"""Block size of ``O_DIRECT`` I/O: offsets and lengths are multiples of it (a multiple of
every disk's logical block size)."""


class AlignedBuffers:
    """A pool of page-aligned buffers of *size* bytes (module docstring)."""

    def __init__(self, size: int, max_idle: int) -> None:
        self.size = size
        self._max_idle = max_idle
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        """A buffer for the caller alone until :meth:`give_back`."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return mmap.mmap(-1, self.size)

    def give_back(self, buffer: mmap.mmap) -> None:
        """Keep *buffer* for the next user, or let it go (unmapped once unreferenced: an
        exception being raised may still hold a view of it)."""
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(buffer)

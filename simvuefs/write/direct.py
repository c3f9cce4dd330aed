"""Spool writes that bypass the page cache (``O_DIRECT``), from reused aligned buffers.

Why: a file written into the mount used to fill 1 GiB of new page cache per GiB in the
spool. On a VM that hands freed memory back to its host (this project's benchmark machine:
a Firecracker balloon with free page reporting) every such page costs a host fault when
it is touched again, and that copy was most of the write phase of an upload
(docs/performance.md, "upload (session 7)"). A direct write copies the bytes once into a
buffer that stays mapped, and the disk takes them from there.

Invariants:

- Only whole blocks go direct: ALIGN bytes at ALIGN-aligned offsets, from a page-aligned
  buffer. A run of contiguous writes that starts inside a block is widened to the block's
  start with the bytes the file holds there (zeros past its end); the part of the run after
  its last whole block is written through the ordinary descriptor.
- The file holds exactly what buffered writes would leave: Linux keeps direct and buffered
  I/O of one file coherent (a direct write writes back and drops the cached pages of its
  range first), so reads through the ordinary descriptor, the seal and checkpoints see it.
- A direct write refused with EINVAL (a filesystem without ``O_DIRECT``, a device with
  larger blocks), or a descriptor that cannot be opened direct (reopened through
  ``/proc/self/fd``, so the staging file may have been renamed), makes the whole run go
  through the ordinary descriptor, and this spool writes buffered from then on. Other
  errors of a direct write are raised as LocalError.
- At most MAX_IDLE buffers of BUFFER bytes are kept between batches; one more per batch
  being written at the moment.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator, Sequence

from simvuefs.aligned import ALIGN, AlignedBuffers
from simvuefs.config import MIB
from simvuefs.localio import local_error
from simvuefs.write.spool import Spool, read_at, write_at

log = logging.getLogger(__name__)

BUFFER = 4 * MIB
"""Bytes copied into one aligned buffer before they are written (one direct ``pwrite``)."""
MAX_IDLE = 2
"""Buffers kept mapped between batches (so their pages are not new each time)."""

Run = tuple[int, list[bytes]]
"""Contiguous writes: where the first starts, and their data in order."""


def runs(writes: Sequence[tuple[int, bytes, int]]) -> Iterator[Run]:
    """Group queued writes (offset, data, growth) into runs of contiguous writes, in order."""
    start, parts, end = -1, list[bytes](), -1
    for offset, data, _ in writes:
        if parts and offset == end:
            parts.append(data)
        else:
            if parts:
                yield start, parts
            start, parts = offset, [data]
        end = offset + len(data)
    if parts:
        yield start, parts


class DirectWriter:
    """Writes batches of a spool's staging files direct (module docstring). Called from
    worker threads, several at once; counts the bytes written each way."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._buffers = AlignedBuffers(BUFFER, MAX_IDLE)
        self.enabled = True
        """False once direct I/O was refused: every later run goes through the page cache."""
        self.direct_bytes = 0
        """Bytes written direct (including the bytes a widened run wrote again)."""
        self.buffered_bytes = 0
        """Bytes written through the ordinary descriptor."""

    def write(self, fd: int, writes: Sequence[tuple[int, bytes, int]]) -> None:
        """Write *writes* (offset, data, growth) in order to the staging file open as *fd*."""
        for start, parts in runs(writes):
            if not (self.enabled and self._write_direct(fd, start, parts)):
                self._write_buffered(fd, start, parts)

    def _write_buffered(self, fd: int, start: int, parts: list[bytes]) -> None:
        for data in parts:
            self._spool.write(fd, start, data)
            start += len(data)
            self.buffered_bytes += len(data)

    def _write_direct(self, fd: int, start: int, parts: list[bytes]) -> bool:
        """Write the run's whole blocks direct and the rest buffered; False (nothing
        written that matters) when it has no whole block or direct I/O is refused."""
        first = start - start % ALIGN
        end = start + sum(len(data) for data in parts)
        if end - end % ALIGN <= start:
            return False  # within one block: nothing to gain
        try:
            head = read_at(fd, first, start - first).ljust(start - first, b"\0")
        except OSError as exc:
            raise local_error(exc, f"cannot read back the spool {self._spool.root}") from None
        try:
            direct = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as exc:  # no O_DIRECT here (EINVAL), or no /proc
            return self._refused(OSError(errno.EINVAL, exc.strerror))
        buffer = self._buffers.take()
        try:
            position, filled = first, 0
            for data in (head, *parts):
                view = memoryview(data)
                while view:
                    taken = min(len(view), BUFFER - filled)
                    buffer[filled : filled + taken] = view[:taken]
                    filled += taken
                    view = view[taken:]
                    if filled == BUFFER:
                        write_at(direct, position, memoryview(buffer))
                        position, filled = position + BUFFER, 0
            whole = filled - filled % ALIGN
            write_at(direct, position, memoryview(buffer)[:whole])
            rest = buffer[whole:filled]
        except OSError as exc:
            return self._refused(exc)
        finally:
            os.close(direct)
            self._buffers.give_back(buffer)
        self._spool.write(fd, position + whole, rest)
        self.direct_bytes += position + whole - first
        self.buffered_bytes += len(rest)
        return True

    def _refused(self, exc: OSError) -> bool:
        """EINVAL: write buffered from now on (False: the caller writes the run buffered);
        any other error is the write's."""
        if exc.errno != errno.EINVAL:
            raise local_error(exc, f"cannot write to the spool {self._spool.root}") from None
        if self.enabled:
            log.info(
                "the spool %s refuses direct I/O; writing through the page cache", self._spool.root
            )
        self.enabled = False
        return False

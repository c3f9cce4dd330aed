"""Part files written and read past the page cache (``O_DIRECT``), through reused
page-aligned buffers.

Why: a cold read through the cache stored every byte a second time in memory, as new
page-cache pages of its part files, which on a VM whose free memory goes back to the host
costs a host fault per page (docs/performance.md, "diskcache (session 7)"). Written with
``O_DIRECT``, a part's bytes go from a buffer this process reuses to the disk: no page is
allocated, and the page cache keeps what readers use instead. Parts are read the same way
(:meth:`DirectIO.reading`): one request per part into a reused buffer, not page-cache pages
filled 128 KiB at a time.

Invariants:

- A file is created with ``O_EXCL`` and holds exactly the concatenation of the pieces (the
  caller renames it into place afterwards: parts still appear complete or not at all).
- The bytes go through one page-aligned buffer of :attr:`DirectIO.capacity` bytes taken
  from a pool (one per thread at a time, reused: no fresh memory per part); files that do
  not fit, or smaller than one block, are written and read through the page cache.
- ``O_DIRECT`` writes cover whole :data:`ALIGN` blocks from offset 0; the tail (length
  modulo :data:`ALIGN`) is written through the page cache on the same descriptor.
  ``O_DIRECT`` reads cover the whole blocks holding the range asked for.
- A file system that refuses ``O_DIRECT`` (``EINVAL`` at ``open`` or at the first write
  or read: tmpfs before Linux 6.6, some FUSE file systems) gets buffered writes and reads,
  and this process does not try again (:attr:`DirectIO.refused`).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from simvuefs.aligned import ALIGN, AlignedBuffers

Piece = bytes | memoryview
"""Bytes of a part, as received (parts are written from several pieces without joining)."""
IDLE_BUFFERS = 4
"""Buffers kept between uses (the cache's writer threads and a reader or two)."""
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class DirectIO:
    """Writes new files and reads ranges of at most *capacity* bytes with ``O_DIRECT``
    (module docstring); thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.refused = False
        """True once the file system refused ``O_DIRECT``: buffered writes from then on."""
        self._buffers = AlignedBuffers(capacity, IDLE_BUFFERS)

    def write_new(self, path: Path, pieces: Sequence[Piece]) -> None:
        """Create *path* holding the concatenation of *pieces*. Raises OSError (the file
        is removed then), FileExistsError if *path* exists."""
        size = sum(len(piece) for piece in pieces)
        if self.refused or size > self.capacity - ALIGN or size < ALIGN:
            write_buffered(path, pieces)
            return
        try:
            descriptor = os.open(path, _NEW_FILE | os.O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.refused = True
            write_buffered(path, pieces)
            return
        try:
            self._write_through(descriptor, pieces, size)
        except BaseException:
            os.close(descriptor)
            path.unlink(missing_ok=True)
            raise
        os.close(descriptor)

    def _write_through(self, descriptor: int, pieces: Sequence[Piece], size: int) -> None:
        buffer = self._buffers.take()
        try:
            position = 0
            for piece in pieces:
                buffer[position : position + len(piece)] = piece
                position += len(piece)
            with memoryview(buffer) as view:
                written = self._write_direct(descriptor, view[: size - size % ALIGN])
                if written < size:  # the tail, through the page cache
                    flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
                    fcntl.fcntl(descriptor, fcntl.F_SETFL, flags & ~os.O_DIRECT)
                    write_all(descriptor, view[written:size])
        finally:
            self._buffers.give_back(buffer)

    def _write_direct(self, descriptor: int, view: memoryview) -> int:
        """Write *view* with ``O_DIRECT``; return how many bytes were written (fewer if the
        file system refused: the caller writes the rest buffered)."""
        written = 0
        while written < len(view):
            try:
                written += os.write(descriptor, view[written:])
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.refused = self.refused or written == 0
                break
            if written % ALIGN:
                break  # a short write off the block grid: the rest goes buffered
        return written

    @contextmanager
    def reading(self, path: Path, offset: int, length: int) -> Iterator[memoryview | None]:
        """Bytes ``[offset, offset + length)`` of *path* (fewer at its end), read with
        ``O_DIRECT`` into a pooled buffer: valid inside the block only. None when
        ``O_DIRECT`` is not used for this range (the caller reads through the page cache).
        Raises OSError (FileNotFoundError if *path* is gone)."""
        first = offset - offset % ALIGN
        span = -(-(offset + length - first) // ALIGN) * ALIGN
        if self.refused or span > self.capacity or length < ALIGN:
            yield None
            return
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.refused = True
            yield None
            return
        buffer = self._buffers.take()
        try:
            with memoryview(buffer) as view:
                got = self._read_direct(descriptor, view[:span], first)
                if got is None:
                    yield None
                else:
                    yield view[offset - first : min(got, offset - first + length)]
        finally:
            os.close(descriptor)
            self._buffers.give_back(buffer)

    def _read_direct(self, descriptor: int, view: memoryview, offset: int) -> int | None:
        """Fill *view* from *offset* on (short at the end of the file); None if refused."""
        got = 0
        while got < len(view):
            try:
                count = os.preadv(descriptor, [view[got:]], offset + got)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.refused = True
                return None
            if count == 0:
                break
            got += count
            if got % ALIGN:
                break  # the end of the file
        return got


def write_all(descriptor: int, view: memoryview) -> None:
    """Write all of *view* to *descriptor*."""
    while view:
        view = view[os.write(descriptor, view) :]


def write_buffered(path: Path, pieces: Sequence[Piece]) -> None:
    """Create *path* (``O_EXCL``) holding the concatenation of *pieces*, through the page
    cache. Raises OSError (the file is removed then)."""
    descriptor = os.open(path, _NEW_FILE, 0o644)
    try:
        for piece in pieces:
            write_all(descriptor, memoryview(piece))
    except BaseException:
        os.close(descriptor)
        path.unlink(missing_ok=True)
        raise
    os.close(descriptor)

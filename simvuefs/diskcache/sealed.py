"""SealedRead: reads of one open file whose content has a seal, from the parts it names.

A seal (``store.Seal``) names parts whose concatenation a reader once checked against the
content's SHA-256 (``seals`` module). Every byte a SealedRead returns comes from one of
those parts: read from disk and checked against the CRC in the part's name (once per part
file and process, as every read of the cache), or, when the part is gone or damaged,
fetched again and checked against that same CRC before it is returned (a mismatch raises
IntegrityError). So what it returns is the verified content, bar a CRC-32 collision of an
accident, and the reader does not hash it again.

Parts are loaded whole (at most 4 MiB, in pieces of ``store.READ_PIECE``); the next part is
loaded in the background while this one is read, and at most the part being read and the
next stay in memory. Trio thread only; loads run in worker threads (``CellCache``).
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import trio

from simvuefs.errors import SimvueError

if TYPE_CHECKING:
    from simvuefs.diskcache.store import Part, Seal
    from simvuefs.models import Artifact


class PartLoader(Protocol):
    """What a SealedRead needs of the cache (``cells.CellCache``)."""

    async def read_sealed(self, artifact: Artifact, part: Part) -> list[bytes]: ...

    def spawn(self, work: Callable[..., Awaitable[None]], *args: object) -> None: ...


class _Load:
    """One part being loaded; *pieces* stays None if the load failed."""

    def __init__(self) -> None:
        self.pieces: list[bytes] | None = None
        self.done = trio.Event()


class SealedRead:
    """Reads of *artifact*, whose content *seal* describes, from the seal's parts."""

    def __init__(self, cache: PartLoader, artifact: Artifact, seal: Seal) -> None:
        self._cache = cache
        self._artifact = artifact
        self._parts = seal.parts
        self._starts = [part.start for part in seal.parts]
        self.size = seal.size
        self._loads: dict[int, _Load] = {}

    async def read(self, off: int, size: int) -> bytes:
        """Bytes ``[off, off + size)``, fewer at the end of the content.

        Raises:
            IntegrityError: a part had to be fetched again and storage sent other bytes.
            SimvueError: a part had to be fetched again and that failed.
        """
        end = min(off + size, self.size)
        chunks: list[bytes] = []
        position = off
        index = 0
        while position < end:
            index = bisect.bisect_right(self._starts, position) - 1
            part = self._parts[index]
            pieces = await self._load(index)
            self._load_ahead(index + 1)
            stop = min(end, part.stop)
            chunks.extend(_cut(pieces, position - part.start, stop - part.start))
            position = stop
        for kept in [i for i in self._loads if not index <= i <= index + 1]:
            del self._loads[kept]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _load(self, index: int) -> list[bytes]:
        load = self._loads.get(index)
        if load is not None:
            if not load.done.is_set():  # (no checkpoint when the part is in memory)
                await load.done.wait()
            if load.pieces is not None:
                return load.pieces
        load = self._loads[index] = _Load()
        try:
            pieces = load.pieces = await self._cache.read_sealed(self._artifact, self._parts[index])
        finally:
            load.done.set()
        return pieces

    def _load_ahead(self, index: int) -> None:
        if index >= len(self._parts) or index in self._loads:
            return
        load = self._loads[index] = _Load()

        async def run() -> None:
            try:
                load.pieces = await self._cache.read_sealed(self._artifact, self._parts[index])
            except SimvueError:
                pass  # the read that needs the part loads it again, and fails in its turn
            finally:
                load.done.set()

        self._cache.spawn(run)


def _cut(pieces: list[bytes], start: int, stop: int) -> list[bytes]:
    """Bytes ``[start, stop)`` of the concatenation of *pieces*, as pieces (whole pieces are
    not copied)."""
    cut: list[bytes] = []
    offset = 0
    for piece in pieces:
        following = offset + len(piece)
        if following > start and offset < stop:
            if start <= offset and following <= stop:
                cut.append(piece)
            else:
                cut.append(piece[max(start - offset, 0) : stop - offset])
        offset = following
        if offset >= stop:
            break
    return cut

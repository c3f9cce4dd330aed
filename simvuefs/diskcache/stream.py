"""CachedBody: an open-ended read (``open_range``) of cached content.

Parts on disk are handed out in pieces (the next part read ahead in a worker thread);
gaps come from one inner stream at a time, cut at cells: at each new cell the stream looks
whether the cell is on disk now, claimed by another process or received by another stream
of this process (then it closes its inner stream and reads from there); otherwise it claims
the cell, announces it (:class:`~simvuefs.diskcache.cells.Filling`) and stores it once
complete. A stream that met others fetches one cell per request from then on, so closing
early wastes little. Closing the body stores what was received and releases its claim.
"""

from __future__ import annotations

from collections import deque
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio

from simvuefs.backends.protocol import BlockBody
from simvuefs.diskcache.cells import CLAIM_WAIT, FOLLOW_PATIENCE, CellCache, Filling, Gap
from simvuefs.diskcache.store import CELL, Piece
from simvuefs.models import Artifact

if TYPE_CHECKING:
    from simvuefs.backends.protocol import RangeBody


class _Ahead:
    """A read of the next segment started ahead (``CachedBody._look_ahead``)."""

    def __init__(self, position: int) -> None:
        self.position = position
        self.found: list[bytes] | Gap = Gap(position, None)
        self.done = trio.Event()


class CachedBody:
    """An open range of cached content: parts from disk, gaps from one inner stream at a
    time, cut at cells for claims and stores (module docstring)."""

    def __init__(self, cache: CellCache, artifact: Artifact, start: int, end: int | None):
        self._cache = cache
        self._artifact = artifact
        self._sha = artifact.checksum
        self._position = start
        self._end = end
        self._ended = False
        self._buffer: deque[bytes] = deque()  # from disk, to hand out
        self._stack: AsyncExitStack | None = None
        self._inner: RangeBody | None = None
        self._inner_fills: BlockBody | None = None  # the inner body, if it can fill buffers
        self._gap_stop: int | None = None
        self._cell = -1  # the cell the inner stream is in
        self._claim: list[int] = []
        self._admitted = False  # the current cell's fetch was admitted (CellCache.room)
        self._pieces: list[Piece] = []
        self._pieces_start = start
        self._filling: Filling | None = None  # the cell this body receives, for followers
        self._following: Filling | None = None  # another stream's cell this body reads
        self._impatient_cell = -1  # a cell whose other stream stalled: fetch it here
        self._contended = False  # others fill this content too: fetch one cell per request
        self._ahead: _Ahead | None = None  # the next part, being read from disk

    async def receive(self, max_bytes: int) -> bytes:
        """The next 1..*max_bytes* bytes, or ``b""`` at the end."""
        while await self._ready():
            chunk = await self._take(max_bytes)
            if chunk:
                return chunk
        return b""

    async def readinto(self, view: memoryview) -> int:
        """Fill *view* with the next bytes; return how many, fewer than ``len(view)`` only
        at the end. Bytes of a gap go from the inner body straight into *view* where it can
        (``BlockBody``: a storage GET on plain TCP), and the part stored keeps a read-only
        view of them: the caller must never write to *view* again (the read-ahead's blocks
        are written once, read/readahead.py)."""
        filled = 0
        while filled < len(view) and await self._ready():
            rest = view[filled:]
            if self._fills_directly():
                filled += await self._fill_inner(rest)
                continue
            chunk = await self._take(len(rest))
            rest[: len(chunk)] = chunk
            filled += len(chunk)
        return filled

    async def _ready(self) -> bool:
        """Plan until there are bytes to hand out (from disk, another stream of this process
        or the inner stream); False at the end."""
        while not self._ended and (self._end is None or self._position < self._end):
            if self._buffer or self._following is not None or self._inner is not None:
                return True
            if self._follow():
                continue
            found = await self._planned()
            if isinstance(found, list):
                self._buffer.extend(found)
                self._look_ahead(self._position + sum(len(piece) for piece in found))
            else:
                await self._open_gap(found)
        return False

    async def _take(self, max_bytes: int) -> bytes:
        """Up to *max_bytes* of the bytes :meth:`_ready` found; ``b""``: plan again."""
        if self._buffer:
            take = self._buffer.popleft()
            if len(take) > max_bytes:
                self._buffer.appendleft(take[max_bytes:])
                take = take[:max_bytes]
            self._position += len(take)
            return take
        if self._following is not None:
            chunk = await self._receive_followed(max_bytes)
            if not chunk:
                await trio.lowlevel.checkpoint()  # (never a loop that starves the others)
            return chunk
        return await self._receive_inner(max_bytes)

    def _fills_directly(self) -> bool:
        return self._inner_fills is not None and not self._buffer and self._following is None

    async def _planned(self) -> list[bytes] | Gap:
        """The next segment: from the read started ahead if it is for here, else now."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.position == self._position:
            await ahead.done.wait()
            if isinstance(ahead.found, list):
                return ahead.found
        return await self._cache.plan(self._sha, self._position, self._end)

    def _look_ahead(self, position: int) -> None:
        """Start reading the part at *position* from disk while this one is consumed
        (each read is a worker-thread hand-off: in turn they would wait for each other)."""
        if self._end is not None and position >= self._end:
            return
        ahead = self._ahead = _Ahead(position)

        async def read() -> None:
            try:
                ahead.found = await self._cache.plan(self._sha, position, self._end)
            finally:
                ahead.done.set()

        self._cache.spawn(read)

    def _follow(self) -> bool:
        """Read the current cell from another stream of this process if one receives it."""
        if self._position // CELL == self._impatient_cell:
            return False
        self._following = self._cache.filling(self._sha, self._position)
        self._contended = self._contended or self._following is not None
        return self._following is not None

    async def _receive_followed(self, max_bytes: int) -> bytes:
        """The next bytes of the followed stream's cell; ``b""`` when this body must plan
        again (cell over, the other stream stopped short, or stalled)."""
        followed = self._following
        assert followed is not None
        cell_end = (self._position // CELL + 1) * CELL
        limit = min(max_bytes, cell_end - self._position)
        if self._end is not None:
            limit = min(limit, self._end - self._position)
        while True:
            chunk = followed.take(self._position, limit)
            if chunk:
                self._position += len(chunk)
                self._cache.stats.shared_bytes += len(chunk)
                return chunk
            if followed.over:
                break
            if not await followed.wait(FOLLOW_PATIENCE):
                self._impatient_cell = self._position // CELL
                break
        self._following = None
        return b""

    async def _open_gap(self, gap: Gap) -> None:
        cell_end = (self._position // CELL + 1) * CELL
        first = cell_end if gap.stop is None else min(gap.stop, cell_end)
        self._admitted = await self._cache.room()
        stop, self._claim = await self._cache.acquire(self._sha, self._position, first, CLAIM_WAIT)
        if stop == self._position:
            return  # it is on disk now
        gap_stop = gap.stop
        if self._contended:  # a request per cell: an early close wastes little
            gap_stop = cell_end if gap.stop is None else min(gap.stop, cell_end)
        self._filling = self._cache.start_filling(self._sha, self._position, gap_stop)
        impatient = self._position // CELL == self._impatient_cell
        ahead = None if impatient else self._cache.upcoming(self._sha, self._position)
        if self._filling is None and ahead is not None:  # another stream will bring it
            self._contended = True
            self._cache.release(self._sha, self._claim)
            self._claim = []
            if not await ahead.wait(FOLLOW_PATIENCE):
                self._impatient_cell = self._position // CELL
            return
        # Else fetch it here (another stream of this process that has the cell's
        # announcement stops before this position: parts of one read-ahead meet mid-cell).
        self._cell = self._position // CELL
        self._gap_stop = gap_stop
        self._stack = AsyncExitStack()
        end = None if self._gap_stop is None else self._gap_stop - 1
        try:
            self._inner = await self._stack.enter_async_context(
                self._cache.inner.open_range(self._artifact, self._position, end)
            )
            self._inner_fills = self._inner if isinstance(self._inner, BlockBody) else None
        except BaseException:
            await self._close_inner()
            raise
        self._pieces, self._pieces_start = [], self._position

    async def _receive_inner(self, max_bytes: int) -> bytes:
        """The next bytes of the open gap; ``b""`` when the gap (or a cell another process
        claimed) is over and the next segment must be planned."""
        assert self._inner is not None
        limit = await self._inner_limit(max_bytes)
        if not limit:
            return b""
        chunk = await self._inner.receive(limit)
        await self._received(chunk)
        return chunk

    async def _fill_inner(self, view: memoryview) -> int:
        """:meth:`_receive_inner` into *view*, in one call to the inner body (0: plan
        again)."""
        assert self._inner_fills is not None
        limit = await self._inner_limit(len(view))
        if not limit:
            return 0
        filled = await self._inner_fills.readinto(view[:limit])
        await self._received(view[:filled].toreadonly())
        return filled

    async def _inner_limit(self, max_bytes: int) -> int:
        """How many of the next bytes (at most *max_bytes*) the open gap may give before a
        cell's end; 0 when the gap (or a cell another process claimed) is over and the
        next segment must be planned."""
        position = self._position
        if self._gap_stop is not None and position >= self._gap_stop:
            await self._close_inner()
            return 0
        if position // CELL != self._cell:  # a new cell: store the last, claim this one
            self._flush()
            self._admitted = await self._cache.room()
            self._cell = position // CELL
            if self._cache.filling(self._sha, position) is not None:
                self._contended = True
                await self._close_inner()  # another stream here receives it: follow that
                return 0
            if not await self._cache.enter(self._sha, position):
                self._contended = True  # on disk, or another process fetches it
                await self._close_inner()
                return 0
            self._claim = [self._cell]
            self._filling = self._cache.start_filling(self._sha, position, self._gap_stop)
            if self._filling is None and self._cache.upcoming(self._sha, position) is not None:
                self._contended = True  # another stream began it meanwhile: follow that
                await self._close_inner()
                return 0
        limit = min(max_bytes, (self._cell + 1) * CELL - position)
        if self._gap_stop is not None:
            limit = min(limit, self._gap_stop - position)
        return limit

    async def _received(self, chunk: Piece) -> None:
        """Account for *chunk*, the inner stream's next bytes (empty: it ended), to be
        stored with its cell and shown to the streams following this one."""
        if not chunk:
            self._ended = True
            await self._close_inner()
            return
        self._cache.count_miss(self._sha, chunk)
        self._cache.stats.stream_miss_bytes += len(chunk)
        if self._claim:
            self._cache.renew(self._sha, self._claim[0])
        self._pieces.append(chunk)
        if self._filling is not None:
            self._filling.add(chunk)
        self._position += len(chunk)

    def _flush(self) -> None:
        """Store the bytes received in the current cell and release its claim."""
        self._cache.keep(
            self._sha,
            self._pieces_start,
            self._pieces,
            self._claim,
            self._filling,
            admitted=self._admitted,
        )
        self._pieces, self._pieces_start, self._claim = [], self._position, []
        self._filling = None

    async def _close_inner(self) -> None:
        self._flush()
        stack, self._stack, self._inner = self._stack, None, None
        self._inner_fills = None
        if stack is not None:
            await stack.aclose()

    async def aclose(self) -> None:
        """Store what was received, release claims, close the inner stream."""
        with trio.CancelScope(shield=True):
            await self._close_inner()

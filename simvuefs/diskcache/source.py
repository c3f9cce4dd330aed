"""CachingSource: a RangeSource that serves ranges from the content cache on disk.

The reader reaches storage only through a ``RangeSource``; a mount with ``--cache-dir``
gives it a :class:`CachingSource` around the backend (:func:`open_content_cache`). Content
with a SHA-256 (every file artifact) is looked up by it; content without one passes
through. Bounded ranges (``read_range``) are served here segment by segment: bytes on disk
from their parts, each gap with one request to the inner source, stored as parts
(``cells.CellCache``); open-ended ones (``open_range``) by ``stream.CachedBody``. SEMANTICS.md
"Content cache" is the contract.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from simvuefs.diskcache.cells import (
    CLAIM_WAIT,
    FOLLOW_PATIENCE,
    SHUTDOWN_WAIT,
    CacheStats,
    CellCache,
)
from simvuefs.diskcache.store import ContentStore
from simvuefs.diskcache.stream import CachedBody
from simvuefs.models import Artifact

if TYPE_CHECKING:
    from simvuefs.backends.protocol import RangeBody, RangeSource
    from simvuefs.config import Settings

log = logging.getLogger(__name__)


class CachingSource(CellCache):
    """A RangeSource serving from the cache what it holds (module docstring)."""

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[RangeBody]:
        """Open bytes *start*..*end* (inclusive; None: to the end), from disk where cached."""
        if not artifact.checksum:
            async with self.inner.open_range(artifact, start, end) as body:
                yield _CountedBody(body, self.stats)
            return
        body = CachedBody(self, artifact, start, None if end is None else end + 1)
        try:
            yield body
        finally:
            await body.aclose()

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Return *length* bytes from *start* (fewer at the end), from disk where cached."""
        sha = artifact.checksum
        if not sha:
            data = await self.inner.read_range(artifact, start, length, on_chunk)
            self.stats.uncached_bytes += len(data)
            return data
        pieces: list[bytes] = []
        position, end = start, start + length
        while position < end:
            found = await self.plan(sha, position, end)
            if isinstance(found, list):
                for piece in found:
                    if on_chunk is not None:
                        on_chunk(piece)
                    pieces.append(piece)
                    position += len(piece)
                continue
            ahead = self.upcoming(sha, position)
            if ahead is not None and await ahead.wait(FOLLOW_PATIENCE):
                continue  # a stream of this process is about to receive it: take it there
            admitted = await self.room()
            # A read waits for another process's claim while its holder makes progress
            # (``acquire``): a cycle through a stream's window ends after HOLDER_STALL.
            stop, claimed = await self.acquire(sha, position, found.stop or end, CLAIM_WAIT)
            if stop == position:
                continue  # another process stored it meanwhile
            try:
                data = await self.inner.read_range(artifact, position, stop - position, on_chunk)
            except BaseException:
                self.release(sha, claimed)
                raise
            self.count_miss(sha, data)
            self.keep(sha, position, [data], claimed, admitted=admitted)
            pieces.append(data)
            if len(data) < stop - position:
                break  # the content ends here
            position = stop
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class _CountedBody:
    """An inner body whose bytes count as not cacheable."""

    def __init__(self, body: RangeBody, stats: CacheStats) -> None:
        self._body = body
        self._stats = stats

    async def receive(self, max_bytes: int) -> bytes:
        data = await self._body.receive(max_bytes)
        self._stats.uncached_bytes += len(data)
        return data


@asynccontextmanager
async def open_content_cache(
    inner: RangeSource, settings: Settings, *, enabled: bool = True
) -> AsyncIterator[CachingSource | None]:
    """Yield a :class:`CachingSource` around *inner* for ``settings.content_cache_dir``,
    or None when there is none, it cannot be used (warned once) or not *enabled* (an
    offline mount reads local files: nothing to cache)."""
    root = settings.content_cache_dir
    if root is None or not enabled:
        yield None
        return
    store = ContentStore(root)
    try:
        writable = await trio.to_thread.run_sync(store.prepare)
    except OSError as exc:
        log.warning("content cache %s cannot be used (%s): reading from the server", root, exc)
        yield None
        return
    if not writable:
        log.warning("content cache %s is read-only: reading it, never storing", root)
    async with trio.open_nursery() as nursery:
        cache = CachingSource(inner, store, settings.content_cache_size, nursery, writable=writable)
        try:
            yield cache
        finally:
            with trio.move_on_after(SHUTDOWN_WAIT, shield=True):
                await cache.settled()
                await cache.final_eviction()
            nursery.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(cache.release_all)

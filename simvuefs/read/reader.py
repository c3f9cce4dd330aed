"""Reader: ``read(off, size)`` of immutable artifacts, from cached blocks and bounded GETs.

Content is cut into blocks of ``settings.block_size`` bytes (:mod:`simvuefs.read.blocks`),
cached in a :class:`BlockCache`. The reader owns the block logic; read-ahead
(:mod:`simvuefs.read.readahead`) and content verification (:mod:`simvuefs.read.verify`)
are steered from :meth:`Reader.read` and own their state.

How a read is served
    Every read first tells the :class:`Prefetcher` where it is (which may start, move or
    replace the handle's stream) and learns whether it continues a sequential run. A read
    that does not (random access: a seek, an HDF5 chunk, a page fault of an mmap, the first
    reads of a file) and none of whose blocks is cached or in flight gets exactly its bytes
    with one bounded GET, not cached (:meth:`Reader._fetch_exact`): small random reads move
    what they ask for. Any other read is served in blocks: every block it
    needs comes from the cache, from a flight another task is already running for it (a
    stream's claim, another read), or from a bounded Range GET that this read starts (one
    request per run of consecutive missing blocks: :meth:`Reader._fetch_run`). What the read
    returns is then fed to the handle's :class:`ContentCheck`, if any.

    Blocks fetched for reads stay cached; streamed ones are transient (readahead).

    With a content cache on disk, a handle's first read asks it whether the content is
    sealed (its parts on disk once matched the sha256: ``diskcache.seals``); then every read
    of the handle is served from those parts (``diskcache.sealed.SealedRead``), each checked
    against its own CRC, without blocks, read-ahead or a second sha256 check. A handle that
    verified its content tells the content cache, which seals it.

Where things happen
    A read is sorted (exact or blocks) in :meth:`Reader.read`. A block is looked up or
    claimed in :meth:`Reader._gather`; fetched with a bounded GET in
    :meth:`Reader._fetch_run` (streamed: ``Prefetcher._fetch_part``); delivered into the
    cache, resolving its claim, in :meth:`Reader._fetch_run` (streamed:
    :meth:`PartStream.deliver`); and what a read returns is verified in :meth:`Reader._verify`.

Memory
    Kept blocks never exceed ``cache_bytes``; blocks the read-ahead pinned (delivered ahead
    of their reader) are within ``readahead_total``; read-ahead and verification keep their
    own bounds (their modules). Each bounded GET holds the run it fetches.

Errors and deadlines
    ``read`` raises only :mod:`simvuefs.errors` exceptions and returns within
    ``settings.request_timeout`` or raises :class:`DeadlineExceeded`.

    A read that fails because the server or the network did (:data:`HELD_ERRORS`: the
    deadline passed, retries did not cure it) leaves its failure on the handle for
    :data:`FAILED_READ_HOLD` seconds: a read of that handle overlapping the failed range
    within that time fails at once with the same error, without asking storage again. The
    kernel retries a failed read-ahead read at once with a smaller read of the same range,
    which would otherwise wait a whole deadline again (a stalled server failed ``cat`` after
    twice ``request_timeout``). A new ``open`` gets a new handle and asks again.

    A handle whose content failed verification fails every later read with
    :class:`IntegrityError` (the kernel retries a failed read-ahead read synchronously: it
    must fail too); every cached block of that content is dropped, and
    ``ReadHandle.keep_cache`` is False for handles opened while the content is suspect, so
    the fs can tell the kernel to drop its page cache of the file.

Concurrency
    Handlers run concurrently in the trio thread. Steering is synchronous, hence consistent;
    cache state read before an await is looked up again after it.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from simvuefs.backends.protocol import RangeSource
from simvuefs.config import MIB, Settings
from simvuefs.diskcache.cells import CellCache
from simvuefs.diskcache.sealed import SealedRead
from simvuefs.errors import (
    DeadlineExceeded,
    IntegrityError,
    ProtocolError,
    ServerError,
    SimvueError,
    TransportError,
)
from simvuefs.models import Artifact
from simvuefs.read.blocks import ContentBlocks
from simvuefs.read.cache import BlockCache, BlockCacheStats, Flight, FlightAbandoned
from simvuefs.read.readahead import HandlePrefetch, Prefetcher
from simvuefs.read.verify import ContentCheck, ContentVerifier

log = logging.getLogger(__name__)

# glibc's mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Free heap memory glibc may keep instead of returning it to the kernel.
KEPT_FREE_MEMORY = 64 * MIB
# Seconds a read's failure is handed to overlapping reads of the same handle (the kernel's
# retry of a failed read-ahead read comes at once; see "Errors and deadlines").
FAILED_READ_HOLD = 2.0
# The failures held: the server or the network failed, after the client's retries and up to
# the deadline; asking again at once would cost as long. (A 404, a refused token or a
# malformed answer come back at once: not held.)
HELD_ERRORS = (TransportError, ServerError)


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """Counters of a :class:`Reader` since it was opened.

    *range_requests*/*range_bytes* count bounded GETs (*exact_requests* of them fetched just
    the bytes of a read that was not sequential), *streams_started*/*stream_bytes* the
    read-ahead's, whose GETs are parts: *parts_started*, *parts_resumed* (after a broken or
    stalled body), *parts_in_flight_peak* (the most at once for one handle).
    *readahead_bytes* is what streams hold claimed ahead of their readers now; the peaks
    are the largest values seen, over all handles and for a single handle.
    *verified*/*verify_failures* count handles whose whole content matched / did not match
    its sha256; *hashed_bytes* is what was hashed for that, *hash_backlog_peak* the most
    bytes waiting for hashing or being hashed at once, over all handles.
    """

    open_handles: int
    reads: int
    bytes_returned: int
    range_requests: int
    range_bytes: int
    exact_requests: int
    streams_started: int
    stream_bytes: int
    parts_started: int
    parts_resumed: int
    parts_in_flight_peak: int
    readahead_bytes: int
    readahead_peak: int
    readahead_peak_per_handle: int
    verified: int
    verify_failures: int
    hashed_bytes: int
    hash_backlog_peak: int
    cache: BlockCacheStats


@dataclass(frozen=True, slots=True)
class HeldFailure:
    """Reading bytes ``[start, end)`` failed, lately with *error*; overlapping reads of the
    same handle fail with it until *until* (trio time)."""

    start: int
    end: int
    error: SimvueError
    until: float


class ReadHandle:
    """One open artifact: its blocks, its read-ahead and its content check.

    ``check`` verifies the content while the handle reads it in order (None when it is not
    verified: ``--no-verify``, empty content, no sha256). ``keep_cache`` is False when the
    content failed verification and no handle has verified it since: the kernel's cached
    pages of it may be wrong. ``failure`` is set once this handle's content failed
    verification: every read fails. ``held`` is the last failed read, for
    :data:`FAILED_READ_HOLD` seconds (module docstring, "Errors and deadlines").
    """

    __slots__ = (
        "blocks",
        "check",
        "failure",
        "held",
        "keep_cache",
        "prefetch",
        "seal_decided",
        "sealed",
    )

    def __init__(
        self,
        blocks: ContentBlocks,
        prefetch: HandlePrefetch,
        check: ContentCheck | None,
        *,
        keep_cache: bool,
    ) -> None:
        self.blocks = blocks
        self.prefetch = prefetch
        self.check = check
        self.keep_cache = keep_cache
        self.failure: str | None = None
        self.held: HeldFailure | None = None
        self.sealed: SealedRead | None = None  # reads from the content's sealed parts
        self.seal_decided: trio.Event | None = None  # set once ``sealed`` is known

    @property
    def artifact(self) -> Artifact:
        return self.blocks.artifact

    @property
    def size(self) -> int:
        """The content's size in bytes."""
        return self.blocks.size


class Reader:
    """Serves reads of open artifacts; see the module docstring for the strategy."""

    def __init__(
        self,
        client: RangeSource,
        settings: Settings,
        nursery: trio.Nursery,
        content: CellCache | None = None,
    ) -> None:
        self._client = client
        self._content = content
        self._settings = settings
        self._nursery = nursery
        self._block_size = settings.block_size
        self._cache = BlockCache(settings.cache_bytes)
        self._prefetcher = Prefetcher(client, self._cache, settings, nursery)
        self._verifier = ContentVerifier(nursery, enabled=settings.verify_content)
        self._open_handles = 0
        self._reads = self._bytes_returned = 0
        self._range_requests = self._range_bytes = self._exact_requests = 0

    def open(self, artifact: Artifact, size: int) -> ReadHandle:
        """Return a handle for reading *artifact*, whose content is *size* bytes long."""
        self._open_handles += 1
        blocks = ContentBlocks(artifact, size, self._block_size)
        return ReadHandle(
            blocks,
            self._prefetcher.open(blocks),
            self._verifier.open(artifact, blocks.key, size),
            keep_cache=self._verifier.trusts(blocks.key),
        )

    async def read(self, handle: ReadHandle, off: int, size: int) -> bytes:
        """Return *size* bytes at *off*, fewer only where the content ends.

        Raises:
            simvuefs.errors.SimvueError: the content could not be fetched (DeadlineExceeded
                after ``settings.request_timeout``), also at once when an overlapping read
                of *handle* failed less than FAILED_READ_HOLD seconds ago; IntegrityError
                once it failed verification.
        """
        if handle.failure is not None:
            raise IntegrityError(handle.failure)
        end = min(off + size, handle.size)
        if off >= end:
            return b""
        _raise_held(handle, off, end)
        self._reads += 1
        sealed = await self._sealed(handle) if self._content is not None else None
        if sealed is not None:
            try:
                data = await self._read_sealed(handle, sealed, off, end)
            except HELD_ERRORS as exc:
                _hold(handle, off, end, exc)
                raise
            self._bytes_returned += len(data)
            return data
        first, last = off // self._block_size, (end - 1) // self._block_size
        sequential = self._prefetcher.steer(handle.prefetch, off, end, first, last)
        try:
            if not sequential and self._absent(handle, first, last):
                data = await self._fetch_exact(handle, off, end)
            else:
                data = await self._serve_blocks(handle, off, end, first, last)
        except HELD_ERRORS as exc:
            _hold(handle, off, end, exc)
            raise
        if handle.check is not None:
            await self._verify(handle, handle.check, off, data)
        self._bytes_returned += len(data)
        return data

    async def _sealed(self, handle: ReadHandle) -> SealedRead | None:
        """The handle's reads from sealed parts, asked of the content cache at its first read
        (concurrent first reads wait for that answer); its sha256 check is then dropped."""
        assert self._content is not None
        decided = handle.seal_decided
        if decided is not None:
            if not decided.is_set():  # (no checkpoint per read once decided)
                await decided.wait()
            return handle.sealed
        decided = handle.seal_decided = trio.Event()
        try:
            handle.sealed = await self._content.open_sealed(handle.artifact, handle.size)
        finally:
            decided.set()
        if handle.sealed is not None and handle.check is not None:
            self._verifier.forget(handle.check)
            handle.check = None
        return handle.sealed

    async def _read_sealed(
        self, handle: ReadHandle, sealed: SealedRead, off: int, end: int
    ) -> bytes:
        with trio.move_on_after(self._settings.request_timeout) as deadline:
            data = await sealed.read(off, end - off)
        if deadline.cancelled_caught:
            raise DeadlineExceeded(
                f"reading {handle.artifact.name!r} took longer than "
                f"{self._settings.request_timeout:g} s"
            )
        return data

    async def release(self, handle: ReadHandle) -> None:
        """Forget *handle*; its stream, if any, is stopped before this returns."""
        self._open_handles -= 1
        if handle.check is not None:
            self._verifier.forget(handle.check)
        await self._prefetcher.release(handle.prefetch)

    def statistics(self) -> ReaderStats:
        """Return the counters, with the read-ahead's, the verifier's and the cache's."""
        readahead = self._prefetcher.statistics()
        verifier = self._verifier.statistics()
        return ReaderStats(
            open_handles=self._open_handles,
            reads=self._reads,
            bytes_returned=self._bytes_returned,
            range_requests=self._range_requests,
            range_bytes=self._range_bytes,
            exact_requests=self._exact_requests,
            streams_started=readahead.streams_started,
            stream_bytes=readahead.stream_bytes,
            parts_started=readahead.parts_started,
            parts_resumed=readahead.parts_resumed,
            parts_in_flight_peak=readahead.parts_in_flight_peak,
            readahead_bytes=readahead.readahead_bytes,
            readahead_peak=readahead.readahead_peak,
            readahead_peak_per_handle=readahead.readahead_peak_per_handle,
            verified=verifier.verified,
            verify_failures=verifier.verify_failures,
            hashed_bytes=verifier.hashed_bytes,
            hash_backlog_peak=verifier.hash_backlog_peak,
            cache=self._cache.statistics(),
        )

    async def _fetch_within_deadline(
        self,
        handle: ReadHandle,
        found: dict[int, bytes],
        mine: list[tuple[int, Flight[bytes]]],
        waiting: list[tuple[int, Flight[bytes]]],
    ) -> None:
        """Get the blocks of *mine* and *waiting* into *found* within ``request_timeout``."""
        with trio.move_on_after(self._settings.request_timeout) as deadline:
            await self._complete(handle, found, mine, waiting)
        if deadline.cancelled_caught:
            raise DeadlineExceeded(
                f"reading {handle.artifact.name!r} took longer than "
                f"{self._settings.request_timeout:g} s"
            )

    async def _serve_blocks(
        self, handle: ReadHandle, off: int, end: int, first: int, last: int
    ) -> bytes:
        """Return bytes ``[off, end)`` (blocks *first*..*last*) from cached blocks, flights
        and bounded GETs of whole blocks."""
        found: dict[int, bytes] = {}
        mine, waiting = self._gather(handle, range(first, last + 1), found)
        if mine or waiting:  # cached blocks need no deadline (cancel scopes are not free)
            await self._fetch_within_deadline(handle, found, mine, waiting)
        blocks = [found[index] for index in range(first, last + 1)]
        return self._cut(blocks, off - first * self._block_size, end - off)

    def _absent(self, handle: ReadHandle, first: int, last: int) -> bool:
        """True if no block of *first*..*last* is cached or in flight."""
        keys = (handle.blocks.cache_key(index) for index in range(first, last + 1))
        return not any(self._cache.contains(key) for key in keys)

    async def _fetch_exact(self, handle: ReadHandle, off: int, end: int) -> bytes:
        """Fetch exactly bytes ``[off, end)`` with one bounded GET, within
        ``request_timeout``; nothing is cached (the kernel's page cache keeps what it
        asked for). What a read that is not (yet) sequential costs (module docstring)."""
        with trio.move_on_after(self._settings.request_timeout) as deadline:
            data = await self._client.read_range(handle.artifact, off, end - off)
        if deadline.cancelled_caught:
            raise DeadlineExceeded(
                f"reading {handle.artifact.name!r} took longer than "
                f"{self._settings.request_timeout:g} s"
            )
        if len(data) != end - off:
            raise ProtocolError(
                f"storage sent {len(data)} bytes of {handle.artifact.name!r} at {off}, "
                f"expected {end - off}"
            )
        self._range_requests += 1
        self._range_bytes += len(data)
        self._exact_requests += 1
        return data

    def _cut(self, blocks: list[bytes], start: int, length: int) -> bytes:
        """Return *length* bytes from *start* in the concatenation of *blocks* (all but the
        last of which are full blocks), copying as little as possible."""
        if len(blocks) == 1:
            block = blocks[0]
            if start == 0 and length == len(block):
                return block
            return block[start : start + length]
        tail = start + length - (len(blocks) - 1) * self._block_size
        return b"".join([blocks[0][start:], *blocks[1:-1], blocks[-1][:tail]])

    # -- serving blocks --------------------------------------------------------------------

    def _gather(
        self, handle: ReadHandle, indexes: Iterable[int], found: dict[int, bytes]
    ) -> tuple[list[tuple[int, Flight[bytes]]], list[tuple[int, Flight[bytes]]]]:
        """Look up blocks *indexes*: put cached ones into *found*, start flights for absent
        ones (returned first: ours to fetch) and return the flights others run."""
        mine: list[tuple[int, Flight[bytes]]] = []
        waiting: list[tuple[int, Flight[bytes]]] = []
        for index in indexes:
            key = handle.blocks.cache_key(index)
            hit = self._cache.lookup(key)
            if hit is None:
                mine.append((index, self._cache.start(key)))
            elif isinstance(hit, Flight):
                waiting.append((index, hit))
            else:
                found[index] = hit
        return mine, waiting

    async def _complete(
        self,
        handle: ReadHandle,
        found: dict[int, bytes],
        mine: list[tuple[int, Flight[bytes]]],
        waiting: list[tuple[int, Flight[bytes]]],
    ) -> None:
        """Fetch the blocks of *mine*, wait for those of *waiting*, into *found*; blocks whose
        flight was abandoned are looked up again."""
        if waiting:
            self._prefetcher.reader_waits(handle.prefetch)
        while mine or waiting:
            if mine:
                found.update(await self._fetch(handle, mine))
            abandoned = []
            for index, flight in waiting:
                try:
                    found[index] = await flight.wait()
                except FlightAbandoned:
                    abandoned.append(index)
            mine, waiting = self._gather(handle, abandoned, found)

    async def _fetch(
        self,
        handle: ReadHandle,
        claimed: list[tuple[int, Flight[bytes]]],
    ) -> dict[int, bytes]:
        """Fetch the *claimed* blocks (ascending), one bounded GET per run of consecutive
        indexes, and resolve every claim whatever happens."""
        fetched: dict[int, bytes] = {}
        try:
            for run in _consecutive_runs(claimed):
                fetched.update(await self._fetch_run(handle, run))
        finally:
            self._abandon(handle, claimed)
        return fetched

    def _abandon(self, handle: ReadHandle, claimed: list[tuple[int, Flight[bytes]]]) -> None:
        for index, flight in claimed:
            if not flight.resolved:
                self._cache.abandon(handle.blocks.cache_key(index), flight)

    async def _fetch_run(
        self,
        handle: ReadHandle,
        run: list[tuple[int, Flight[bytes]]],
    ) -> dict[int, bytes]:
        start = run[0][0] * self._block_size
        length = min((run[-1][0] + 1) * self._block_size, handle.size) - start
        try:
            data = await self._client.read_range(handle.artifact, start, length)
            if len(data) != length:
                raise ProtocolError(
                    f"storage sent {len(data)} bytes of {handle.artifact.name!r} at {start}, "
                    f"expected {length}"
                )
        except Exception as exc:
            for index, flight in run:
                if not flight.resolved:
                    self._cache.fail(handle.blocks.cache_key(index), flight, exc)
            raise
        self._range_requests += 1
        self._range_bytes += length
        fetched: dict[int, bytes] = {}
        for index, flight in run:
            offset = index * self._block_size - start
            block = data if len(run) == 1 else data[offset : offset + self._block_size]
            if not flight.resolved:
                self._cache.finish(handle.blocks.cache_key(index), flight, block)
            fetched[index] = block
        return fetched

    # -- verification ----------------------------------------------------------------------

    async def _verify(self, handle: ReadHandle, check: ContentCheck, off: int, data: bytes) -> None:
        """Feed what a read returned to the handle's check; on a mismatch the handle fails
        from now on, the content's cached blocks are dropped and the content cache on disk
        drops its parts; once it matches, the content cache seals them."""
        try:
            verified = await self._verifier.feed(check, off, data)
        except IntegrityError as exc:
            for index in range(handle.blocks.count):
                self._cache.discard(handle.blocks.cache_key(index))
            handle.failure = str(exc)
            if self._content is not None:
                await self._content.forget(handle.artifact)
            raise
        if verified and self._content is not None:
            self._content.verified(handle.artifact, handle.size)


def keep_freed_blocks(block_size: int) -> None:
    """Let glibc reuse freed block-sized buffers instead of returning them to the kernel.

    By default glibc serves allocations of about a block with mmap, or trims them off the
    heap when they are freed, so every new block (and every 1 MiB socket read) is page-faulted
    in again: about 250 faults per MiB, which halved sequential read throughput
    (docs/benchmarks.md). Fixed mmap and trim thresholds above the block size avoid that.
    Process-wide; nothing happens where the C library has no ``mallopt``.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return
    mallopt(_M_MMAP_THRESHOLD, max(4 * MIB, 2 * block_size))
    mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_MEMORY)


@asynccontextmanager
async def open_reader(
    client: RangeSource,
    settings: Settings,
    content: CellCache | None = None,
) -> AsyncIterator[Reader]:
    """Yield a :class:`Reader` whose read-ahead tasks live until the block exits.

    Also tunes the C allocator for block-sized buffers (:func:`keep_freed_blocks`).
    """
    keep_freed_blocks(settings.block_size)
    async with trio.open_nursery() as nursery:
        reader = Reader(client, settings, nursery, content)
        try:
            yield reader
        finally:
            nursery.cancel_scope.cancel()
            log.debug("reader statistics: %s", reader.statistics())


def _hold(handle: ReadHandle, off: int, end: int, error: SimvueError) -> None:
    """Remember that reading ``[off, end)`` of *handle* failed with *error*. Reads failing
    together (a read and the kernel's read-ahead, both waiting on a stalled server) are held
    as one span from the first start to the last end."""
    now = trio.current_time()
    held = handle.held
    if held is not None and now < held.until:
        off, end = min(off, held.start), max(end, held.end)
    handle.held = HeldFailure(off, end, error, now + FAILED_READ_HOLD)


def _raise_held(handle: ReadHandle, off: int, end: int) -> None:
    """Raise the held failure of *handle* if it covers part of ``[off, end)`` and is recent
    (``ReadHandle.held``); forget it once it is old."""
    held = handle.held
    if held is None:
        return
    if trio.current_time() >= held.until:
        handle.held = None
    elif off < held.end and held.start < end:
        log.debug(
            "read of %r at %d: failing at once, an overlapping read just failed: %s",
            handle.artifact.name,
            off,
            held.error,
        )
        raise held.error.with_traceback(None)


def _consecutive_runs(
    claimed: list[tuple[int, Flight[bytes]]],
) -> list[list[tuple[int, Flight[bytes]]]]:
    runs: list[list[tuple[int, Flight[bytes]]]] = []
    for item in claimed:
        if runs and runs[-1][-1][0] + 1 == item[0]:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs

"""Reader: ``read(off, size)`` of immutable artifacts, from cached blocks and streamed GETs.

Content is cut into blocks of ``settings.block_size`` bytes, cached in a :class:`BlockCache`
under ``(artifact.checksum or artifact.id, index)``, so equal checksums share blocks.

How a read is served
    Every block a read needs comes from the cache, from a flight another task is already
    running for it, or from a bounded Range GET that this read starts (one request per run
    of consecutive missing blocks). That is all a random reader ever causes, so ``head -c``
    or a ``dd skip=`` costs about one block of transfer. A read whose blocks are all its own
    to fetch (one run) returns as soon as its own bytes arrived; a task of the reader's
    nursery receives the rest of the run into the cache. So the first read of a file waits
    for the first piece of its block, not the whole block (time to first byte).

    A handle whose earlier reads covered a block sequentially gets a *stream*: one open-ended
    Range GET from the first block it lacks, received by a task in the reader's nursery. The
    stream claims blocks ahead of the reader's furthest block (registering them as flights,
    so that any reader of those blocks waits for the stream instead of fetching) and fills
    them in order. The number of blocks it may claim ahead, its window, starts at 1 and
    doubles each time the reader moves into a new block, up to ``readahead_per_file``; when
    the window is full the stream stops receiving and TCP holds the server back.

    A read outside the stream's reach (a seek, an isolated page-cache miss) is served like a
    random read and leaves the stream alone; only a new sequential run elsewhere replaces it.
    ``release`` stops it.

    Streamed blocks are transient: once the reader has moved past them they are dropped
    from the cache (the kernel's page cache holds what was read), so a long sequential read
    recycles a window's worth of memory instead of filling the cache with data read once;
    so are the blocks of the run fetched before its stream started. Blocks fetched for
    random reads stay cached.

Memory
    Blocks claimed ahead of their reader (read-ahead) never exceed ``readahead_per_file`` per
    handle nor ``readahead_total`` over all handles; the latter is further capped at half of
    ``cache_bytes``, because filled read-ahead blocks live in the cache and must not evict
    each other before they are read. Cached blocks never exceed ``cache_bytes``. Beyond that,
    each stream holds at most one partly received block and each bounded GET the run it
    fetches; verification holds at most ``VERIFY_BACKLOG`` of out-of-order pieces per
    handle, and about ``HASH_BACKLOG_TOTAL`` plus one read per handle waiting for hashing.

Errors and deadlines
    ``read`` raises only :mod:`simvuefs.errors` exceptions and returns within
    ``settings.request_timeout`` or raises :class:`DeadlineExceeded`. A stream that fails or
    is stopped abandons its claims: readers waiting on them fetch those blocks themselves and
    see the error, if it persists, from their own request.

Verification
    A handle whose reads cover its content in order, from byte 0 to the end, has what it
    returned checked against the artifact's sha256 (when the server gave one). Reads may
    complete slightly out of order (the kernel sends several at once): pieces up to
    ``VERIFY_BACKLOG`` bytes beyond the verified prefix wait for the gap to fill; a read
    further away (a seek, random access) ends verification for that handle. Hashing runs in
    worker threads in ``HASH_BATCH`` batches, off the read path; a read waits only when more
    than ``VERIFY_BACKLOG`` bytes of its handle, or more than ``HASH_BACKLOG_TOTAL`` bytes of
    all handles, are queued or being hashed (then its handle's queue is hashed at once and
    the read waits for that). The read that completes the
    content waits for the digest: on a mismatch it raises :class:`IntegrityError` (EIO; the
    earlier reads' bytes are already returned, the last ones never are), and so does every
    later read of that handle (the kernel retries a failed read-ahead read synchronously:
    it must fail too). The error is logged, every cached block of the content is dropped,
    and the content is *suspect* until a later handle verifies it: ``ReadHandle.keep_cache``
    is False for handles opened meanwhile, so the fs can tell the kernel to drop its page
    cache of the file.

Concurrency
    Handlers run concurrently in the trio thread. Steering (the run detector, windows,
    claims) is synchronous, hence consistent; cache state read before an await is looked up
    again after it.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from simvuefs.backends.protocol import RangeBody, RangeSource
from simvuefs.config import MIB, Settings
from simvuefs.errors import DeadlineExceeded, IntegrityError, ProtocolError, SimvueError
from simvuefs.models import Artifact
from simvuefs.read.cache import BlockCache, BlockCacheStats, Flight, FlightAbandoned

log = logging.getLogger(__name__)

# glibc's mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Free heap memory glibc may keep instead of returning it to the kernel.
KEPT_FREE_MEMORY = 64 * MIB

STREAM_TRAIL_BLOCKS = 2
"""Streamed blocks kept behind a reader's position: the kernel's concurrent reads of one
region arrive slightly out of order."""

VERIFY_BACKLOG = 16 * MIB
"""Per verified handle: the most bytes held beyond the verified prefix (out-of-order reads)
and the most queued for hashing before a read waits for the hasher."""
HASH_BATCH = 8 * MIB
"""Bytes collected before a worker thread hashes them (one thread hop per batch)."""
HASH_BACKLOG_TOTAL = 32 * MIB
"""Over all handles: bytes queued or being hashed beyond which each read that adds to them
starts its handle's hashing at once and waits for it (many concurrent readers would
otherwise hold up to HASH_BATCH each)."""
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """Counters of a :class:`Reader` since it was opened.

    *range_requests*/*range_bytes* count bounded GETs, *streams_started*/*stream_bytes* the
    streamed ones. *readahead_bytes* is what streams hold claimed ahead of their readers
    now; the peaks are the largest values seen, over all handles and for a single handle.
    *verified*/*verify_failures* count handles whose whole content matched / did not match
    its sha256; *hashed_bytes* is what was hashed for that, *hash_backlog_peak* the most
    bytes waiting for hashing or being hashed at once, over all handles.
    """

    open_handles: int
    reads: int
    bytes_returned: int
    range_requests: int
    range_bytes: int
    streams_started: int
    stream_bytes: int
    readahead_bytes: int
    readahead_peak: int
    readahead_peak_per_handle: int
    verified: int
    verify_failures: int
    hashed_bytes: int
    hash_backlog_peak: int
    cache: BlockCacheStats


class ReadHandle:
    """One open artifact: its content size, its cache key, its current run and its stream.

    The run is the byte span ``[run_start, run_end)`` covered by the handle's recent reads,
    each of which started within one block of the span; ``run_end`` is None before the first
    read. ``streamed`` lists the cached blocks its streams delivered, oldest first.
    ``verifier`` checks the content while the handle reads it in order (None once that is
    impossible or done, and from the start with *verify* False: ``--no-verify``).
    ``keep_cache`` is False when the content failed verification and no handle has verified
    it since: the kernel's cached pages of it may be wrong.
    ``failure`` is set once this handle's content failed verification: every read fails.
    """

    __slots__ = (
        "artifact",
        "failure",
        "keep_cache",
        "key",
        "run_end",
        "run_start",
        "size",
        "stream",
        "streamed",
        "verifier",
    )

    def __init__(self, artifact: Artifact, size: int, *, verify: bool = True) -> None:
        self.artifact = artifact
        self.size = size
        self.key = artifact.checksum or artifact.id
        self.run_start = 0
        self.run_end: int | None = None
        self.stream: _Stream | None = None
        self.streamed: deque[int] = deque()
        self.keep_cache = True
        self.failure: str | None = None
        self.verifier: _Verifier | None = None
        if verify and size > 0 and _SHA256_HEX.fullmatch(artifact.checksum):
            self.verifier = _Verifier(artifact.checksum.lower(), size)


class _Verifier:
    """The sha256 of one handle's content, fed in order as its reads return it.

    ``fed`` bytes from 0 are queued or hashed; ``early`` holds pieces that arrived before the
    gap in front of them was filled. ``queue`` is handed to a hashing task, which runs while
    ``hashing`` and sets ``idle`` when the queue is empty.
    """

    __slots__ = (
        "digest",
        "early",
        "early_bytes",
        "expected",
        "fed",
        "hashing",
        "idle",
        "queue",
        "queued",
        "size",
    )

    def __init__(self, expected: str, size: int) -> None:
        self.expected = expected
        self.size = size
        self.digest = hashlib.sha256()
        self.fed = 0
        self.early: dict[int, bytes] = {}
        self.early_bytes = 0
        self.queue: list[bytes] = []
        self.queued = 0
        self.hashing = False
        self.idle = trio.Event()
        self.idle.set()

    def accept(self, off: int, data: bytes) -> bool:
        """Take the bytes a read returned at *off*; False if the handle is not reading in
        order (verification is then impossible)."""
        end = off + len(data)
        if end <= self.fed:
            return True  # read again: already fed
        if off > self.fed:
            held = self.early.get(off)
            grow = len(data) - (len(held) if held is not None else 0)
            if end - self.fed > VERIFY_BACKLOG or self.early_bytes + grow > VERIFY_BACKLOG:
                return False
            if grow > 0:
                self.early[off] = data
                self.early_bytes += grow
            return True
        self._push(data, off)
        for start in sorted(self.early):
            if start > self.fed:
                break
            piece = self.early.pop(start)
            self.early_bytes -= len(piece)
            if start + len(piece) > self.fed:
                self._push(piece, start)
        return True

    def _push(self, data: bytes, off: int) -> None:
        """Queue the part of *data* (which starts at *off* <= fed) beyond ``fed``."""
        fresh = data if off == self.fed else data[self.fed - off :]
        self.queue.append(fresh)
        self.queued += len(fresh)
        self.fed += len(fresh)

    async def wait_idle(self) -> None:
        """Wait until everything queued is hashed."""
        while self.hashing:
            await self.idle.wait()


class _Progress:
    """The bytes of one bounded GET received so far, for the read waiting for a part of them.

    ``scope`` bounds the task receiving them; ``error`` is set if it failed.
    """

    __slots__ = ("_arrived", "chunks", "error", "received", "scope")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.received = 0
        self.error: Exception | None = None
        self.scope = trio.CancelScope()
        self._arrived = trio.Event()

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.received += len(chunk)
        self._wake()

    def fail(self, error: Exception) -> None:
        self.error = error
        self._wake()

    def settle(self, blocks: list[bytes]) -> None:
        """The fetch succeeded with *blocks*: make sure they are all there (a source may
        deliver them only at the end)."""
        total = sum(len(block) for block in blocks)
        if self.received < total:
            self.chunks, self.received = blocks, total
            self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    async def wait_for(self, count: int) -> None:
        """Wait until *count* bytes arrived; raise the fetch's error if it failed first."""
        while self.received < count:
            if self.error is not None:
                raise self.error
            await self._arrived.wait()

    def slice(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of what arrived (which must cover them)."""
        pieces = []
        at = 0
        for chunk in self.chunks:
            if at + len(chunk) > start:
                pieces.append(chunk)
            at += len(chunk)
            if at >= stop:
                break
        first = at - sum(len(piece) for piece in pieces)
        if len(pieces) == 1:
            piece = pieces[0]
            if start == first and stop - first == len(piece):
                return piece
            return piece[start - first : stop - first]
        return b"".join(pieces)[start - first : stop - first]


class _Stream:
    """A streamed GET feeding one handle's read-ahead.

    Blocks ``[first, permitted_end)`` may be received. Those that were neither cached nor in
    flight when permitted are claimed (``claims`` holds the unfilled ones); claimed blocks
    after ``consumer``, the reader's furthest block, are read-ahead and charged to the budget
    (``ahead``: index -> bytes) until the reader reaches them or the stream stops.
    """

    __slots__ = (
        "ahead",
        "ahead_bytes",
        "claims",
        "consumer",
        "finished",
        "first",
        "handle",
        "permitted_end",
        "scope",
        "starved",
        "stopped",
        "wakeup",
        "window",
    )

    def __init__(self, handle: ReadHandle, first: int, consumer: int, window: int) -> None:
        self.handle = handle
        self.first = first
        self.consumer = consumer
        self.window = window
        self.permitted_end = first
        self.claims: dict[int, Flight[bytes]] = {}
        self.ahead: dict[int, int] = {}
        self.ahead_bytes = 0
        self.starved = False
        self.stopped = False
        self.scope = trio.CancelScope()
        self.wakeup = trio.Event()
        self.finished = trio.Event()

    def covers(self, first: int, last: int) -> bool:
        """True if blocks *first*..*last* are where this stream is or is about to be."""
        return self.first <= last and first <= self.permitted_end + self.window


class Reader:
    """Serves reads of open artifacts; see the module docstring for the strategy."""

    def __init__(self, client: RangeSource, settings: Settings, nursery: trio.Nursery) -> None:
        self._client = client
        self._settings = settings
        self._nursery = nursery
        self._block_size = settings.block_size
        self._cache = BlockCache(settings.cache_bytes)
        self._max_window = settings.readahead_per_file // settings.block_size
        self._readahead_cap = min(settings.readahead_total, settings.cache_bytes // 2)
        self._readahead = 0
        self._streams: set[_Stream] = set()
        self._open_handles = 0
        self._reads = self._bytes_returned = 0
        self._range_requests = self._range_bytes = 0
        self._streams_started = self._stream_bytes = 0
        self._readahead_peak = self._readahead_peak_per_handle = 0
        self._verified = self._verify_failures = self._hashed_bytes = 0
        self._hash_pending = 0  # bytes in verifier queues or being hashed, all handles
        self._hash_backlog_peak = 0
        # Keys of content that failed verification and has not been verified since.
        self._suspect: set[str] = set()

    def open(self, artifact: Artifact, size: int) -> ReadHandle:
        """Return a handle for reading *artifact*, whose content is *size* bytes long."""
        self._open_handles += 1
        handle = ReadHandle(artifact, size, verify=self._settings.verify_content)
        handle.keep_cache = handle.key not in self._suspect
        return handle

    async def read(self, handle: ReadHandle, off: int, size: int) -> bytes:
        """Return *size* bytes at *off*, fewer only where the content ends.

        Raises:
            simvuefs.errors.SimvueError: the content could not be fetched (DeadlineExceeded
                after ``settings.request_timeout``).
        """
        if handle.failure is not None:
            raise IntegrityError(handle.failure)
        end = min(off + size, handle.size)
        if off >= end:
            return b""
        self._reads += 1
        first, last = off // self._block_size, (end - 1) // self._block_size
        self._steer(handle, off, end, first, last)
        found: dict[int, bytes] = {}
        mine, waiting = self._gather(handle, range(first, last + 1), found)
        early: bytes | None = None
        if mine or waiting:  # cached blocks need no deadline (cancel scopes are not free)
            with trio.move_on_after(self._settings.request_timeout) as deadline:
                if len(mine) == last - first + 1:  # one run, all ours: return its bytes early
                    early = await self._fetch_early(handle, mine, off, end)
                else:
                    await self._complete(handle, found, mine, waiting)
            if deadline.cancelled_caught:
                raise DeadlineExceeded(
                    f"reading {handle.artifact.name!r} took longer than "
                    f"{self._settings.request_timeout:g} s"
                )
        if early is not None:
            data = early
        else:
            blocks = [found[index] for index in range(first, last + 1)]
            data = self._cut(blocks, off - first * self._block_size, end - off)
        if handle.verifier is not None:
            await self._verify(handle, handle.verifier, off, data)
        self._bytes_returned += len(data)
        return data

    async def release(self, handle: ReadHandle) -> None:
        """Forget *handle*; its stream, if any, is stopped before this returns."""
        self._open_handles -= 1
        if handle.verifier is not None:
            self._forget_queue(handle, handle.verifier)
        stream = handle.stream
        if stream is not None:
            self._stop(stream)
            await stream.finished.wait()
        self._drop_streamed(handle, self._block_count(handle))

    def statistics(self) -> ReaderStats:
        """Return the counters, with the block cache's."""
        return ReaderStats(
            open_handles=self._open_handles,
            reads=self._reads,
            bytes_returned=self._bytes_returned,
            range_requests=self._range_requests,
            range_bytes=self._range_bytes,
            streams_started=self._streams_started,
            stream_bytes=self._stream_bytes,
            readahead_bytes=self._readahead,
            readahead_peak=self._readahead_peak,
            readahead_peak_per_handle=self._readahead_peak_per_handle,
            verified=self._verified,
            verify_failures=self._verify_failures,
            hashed_bytes=self._hashed_bytes,
            hash_backlog_peak=self._hash_backlog_peak,
            cache=self._cache.statistics(),
        )

    # -- block arithmetic ------------------------------------------------------------------

    def _block_count(self, handle: ReadHandle) -> int:
        return -(-handle.size // self._block_size)

    def _block_length(self, handle: ReadHandle, index: int) -> int:
        return min(self._block_size, handle.size - index * self._block_size)

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
            key = (handle.key, index)
            hit = self._cache.lookup(key)
            if hit is None:
                mine.append((index, self._cache.start(key)))
            elif isinstance(hit, bytes):
                found[index] = hit
            else:
                waiting.append((index, hit))
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
        progress: _Progress | None = None,
    ) -> dict[int, bytes]:
        """Fetch the *claimed* blocks (ascending), one bounded GET per run of consecutive
        indexes, and resolve every claim whatever happens. *progress* (with a single run)
        receives the bytes as they arrive."""
        fetched: dict[int, bytes] = {}
        try:
            for run in _consecutive_runs(claimed):
                fetched.update(await self._fetch_run(handle, run, progress))
        finally:
            self._abandon(handle, claimed)
        return fetched

    def _abandon(self, handle: ReadHandle, claimed: list[tuple[int, Flight[bytes]]]) -> None:
        for index, flight in claimed:
            if not flight.resolved:
                self._cache.abandon((handle.key, index), flight)

    async def _fetch_early(
        self, handle: ReadHandle, claimed: list[tuple[int, Flight[bytes]]], off: int, end: int
    ) -> bytes:
        """Return bytes ``[off, end)``, which lie in the *claimed* run of blocks, as soon as
        they arrive; the rest of the run is received and cached by a task of the nursery.

        A small first read (a 1-byte read makes the kernel ask for 16 KiB) so waits for the
        first chunk of the block's GET, not the whole block. If this read is cancelled (its
        deadline) before its bytes arrived, the fetch is cancelled and its claims abandoned
        at once, as when the read fetched the run itself.
        """
        start = claimed[0][0] * self._block_size
        progress = _Progress()
        self._nursery.start_soon(self._fetch_in_background, handle, claimed, progress)
        arrived = False
        try:
            await progress.wait_for(end - start)
            arrived = True
        finally:
            if not arrived:
                progress.scope.cancel()
                self._abandon(handle, claimed)
        return progress.slice(off - start, end - start)

    async def _fetch_in_background(
        self, handle: ReadHandle, claimed: list[tuple[int, Flight[bytes]]], progress: _Progress
    ) -> None:
        """Run :meth:`_fetch` for :meth:`_fetch_early`; its error goes to the waiting read,
        never to the nursery."""
        with progress.scope:
            try:
                fetched = await self._fetch(handle, claimed, progress)
                progress.settle([fetched[index] for index, _ in claimed])
            except Exception as exc:
                progress.fail(exc)
                if not isinstance(exc, SimvueError):
                    log.exception("fetching blocks of artifact %s failed", handle.artifact.id)

    async def _fetch_run(
        self,
        handle: ReadHandle,
        run: list[tuple[int, Flight[bytes]]],
        progress: _Progress | None = None,
    ) -> dict[int, bytes]:
        start = run[0][0] * self._block_size
        length = min((run[-1][0] + 1) * self._block_size, handle.size) - start
        on_chunk = None if progress is None else progress.add
        try:
            data = await self._client.read_range(handle.artifact, start, length, on_chunk)
            if len(data) != length:
                raise ProtocolError(
                    f"storage sent {len(data)} bytes of {handle.artifact.name!r} at {start}, "
                    f"expected {length}"
                )
        except Exception as exc:
            for index, flight in run:
                if not flight.resolved:  # (an early read that gave up abandoned them)
                    self._cache.fail((handle.key, index), flight, exc)
            raise
        self._range_requests += 1
        self._range_bytes += length
        fetched: dict[int, bytes] = {}
        for index, flight in run:
            offset = index * self._block_size - start
            block = data if len(run) == 1 else data[offset : offset + self._block_size]
            if not flight.resolved:
                self._cache.finish((handle.key, index), flight, block)
            fetched[index] = block
        return fetched

    # -- verification ----------------------------------------------------------------------

    async def _verify(self, handle: ReadHandle, verifier: _Verifier, off: int, data: bytes) -> None:
        """Feed what a read returned to the handle's verifier; raise IntegrityError from the
        read that completes content whose sha256 does not match."""
        complete_before = verifier.fed == verifier.size
        queued_before = verifier.queued
        if not verifier.accept(off, data):
            self._forget_queue(handle, verifier)
            log.debug("artifact %s: read out of order, not verified", handle.artifact.id)
            return
        self._hash_pending += verifier.queued - queued_before
        self._hash_backlog_peak = max(self._hash_backlog_peak, self._hash_pending)
        completes = not complete_before and verifier.fed == verifier.size
        pressed = self._hash_pending > HASH_BACKLOG_TOTAL
        if (
            verifier.queue
            and not verifier.hashing
            and (completes or pressed or verifier.queued >= HASH_BATCH)
        ):
            verifier.hashing = True
            verifier.idle = trio.Event()
            self._nursery.start_soon(self._hash_queued, verifier)
        if verifier.queued > VERIFY_BACKLOG or (pressed and verifier.hashing):
            await verifier.wait_idle()
        if not completes:
            return
        handle.verifier = None
        await verifier.wait_idle()
        actual = verifier.digest.hexdigest()
        if actual == verifier.expected:
            self._verified += 1
            self._suspect.discard(handle.key)
            return
        self._verify_failures += 1
        self._suspect.add(handle.key)
        for index in range(self._block_count(handle)):
            self._cache.discard((handle.key, index))
        log.error(
            "artifact %s (%r): the content read does not match its sha256 (expected %s, got "
            "%s); the last read fails with EIO and the cached blocks were dropped",
            handle.artifact.id,
            handle.artifact.name,
            verifier.expected,
            actual,
        )
        handle.failure = (
            f"content of {handle.artifact.name!r} does not match its checksum {verifier.expected}"
        )
        raise IntegrityError(handle.failure)

    def _forget_queue(self, handle: ReadHandle, verifier: _Verifier) -> None:
        """The handle's content will not be verified: drop what waits for hashing."""
        handle.verifier = None
        self._hash_pending -= verifier.queued
        verifier.queue, verifier.queued = [], 0

    async def _hash_queued(self, verifier: _Verifier) -> None:
        """Hash the verifier's queue in worker threads until it is empty."""
        try:
            while verifier.queue:
                batch, size = verifier.queue, verifier.queued
                verifier.queue, verifier.queued = [], 0
                try:
                    await trio.to_thread.run_sync(_hash_into, verifier.digest, batch)
                finally:
                    self._hash_pending -= size
                self._hashed_bytes += size
        finally:
            verifier.hashing = False
            verifier.idle.set()

    # -- steering: run detection and read-ahead windows ------------------------------------

    def _steer(self, handle: ReadHandle, off: int, end: int, first: int, last: int) -> None:
        """Account a read of ``[off, end)`` (blocks *first*..*last*): extend or restart the
        handle's run, move its stream along, or start a stream for a long sequential run."""
        size = self._block_size
        if handle.run_end is not None and handle.run_start - size <= off <= handle.run_end + size:
            earlier = handle.run_end - handle.run_start
            handle.run_start = min(handle.run_start, off)
            handle.run_end = max(handle.run_end, end)
            self._drop_streamed(handle, first - STREAM_TRAIL_BLOCKS)
        else:
            earlier = 0
            handle.run_start, handle.run_end = off, end
        stream = handle.stream
        if stream is not None and stream.covers(first, last):
            self._advance(stream, last)
        elif earlier >= size and last > handle.run_start // size:
            # Earlier reads of this run covered a block: sequential, not one big random read.
            self._start_stream(handle, first, last)

    def _drop_streamed(self, handle: ReadHandle, before: int) -> None:
        """Drop the blocks *handle*'s streams delivered, oldest first, up to block *before*."""
        streamed = handle.streamed
        while streamed and streamed[0] < before:
            self._cache.discard((handle.key, streamed.popleft()))

    def _start_stream(self, handle: ReadHandle, first: int, last: int) -> None:
        """Stream from the first block at or after *first* that is neither cached nor in
        flight (looking one window ahead), unless the handle's stream already covers it."""
        limit = min(first + self._max_window + 1, self._block_count(handle))
        start = first
        while start < limit and self._cache.contains((handle.key, start)):
            start += 1
        if start >= limit:
            return
        if handle.stream is not None:
            if handle.stream.covers(start, start):
                self._advance(handle.stream, last)
                return
            self._stop(handle.stream)
        stream = _Stream(handle, start, consumer=last, window=min(1, self._max_window))
        # The run's blocks fetched before it was known to be sequential go like streamed ones.
        before = range(handle.run_start // self._block_size, min(start, first))
        handle.streamed.extendleft(i for i in reversed(before) if i not in handle.streamed)
        handle.stream = stream
        self._streams.add(stream)
        self._streams_started += 1
        log.debug("streaming %s from block %d", handle.artifact.id, start)
        self._extend(stream)
        self._nursery.start_soon(self._run_stream, stream)

    def _advance(self, stream: _Stream, last: int) -> None:
        """The reader reached block *last*: widen the window and release what it consumed."""
        if last > stream.consumer:
            stream.consumer = last
            stream.window = min(stream.window * 2, self._max_window)
            released = False
            while stream.ahead:
                index = next(iter(stream.ahead))
                if index > last:
                    break
                self._unreserve(stream, index)
                released = True
            if released:
                self._wake_starved()
        self._extend(stream)

    def _extend(self, stream: _Stream) -> None:
        """Permit and claim blocks up to the window past the consumer, within the budget."""
        handle = stream.handle
        limit = min(stream.consumer + stream.window + 1, self._block_count(handle))
        index = stream.permitted_end
        while index < limit:
            key = (handle.key, index)
            if not self._cache.contains(key):
                if index > stream.consumer and not self._reserve(stream, index):
                    break
                stream.claims[index] = self._cache.start(key)
            index += 1
        stream.starved = index < limit
        if index > stream.permitted_end:
            stream.permitted_end = index
            stream.wakeup.set()

    def _reserve(self, stream: _Stream, index: int) -> bool:
        length = self._block_length(stream.handle, index)
        if self._readahead + length > self._readahead_cap:
            return False
        stream.ahead[index] = length
        stream.ahead_bytes += length
        self._readahead += length
        self._readahead_peak = max(self._readahead_peak, self._readahead)
        self._readahead_peak_per_handle = max(self._readahead_peak_per_handle, stream.ahead_bytes)
        return True

    def _unreserve(self, stream: _Stream, index: int) -> None:
        length = stream.ahead.pop(index)
        stream.ahead_bytes -= length
        self._readahead -= length

    def _wake_starved(self) -> None:
        for stream in [s for s in self._streams if s.starved]:
            self._extend(stream)

    def _stop(self, stream: _Stream) -> None:
        """Stop *stream* now: abandon its claims, return its budget. Idempotent."""
        if stream.stopped:
            return
        stream.stopped = True
        stream.scope.cancel()
        for index, flight in stream.claims.items():
            self._cache.abandon((stream.handle.key, index), flight)
        stream.claims.clear()
        for index in list(stream.ahead):
            self._unreserve(stream, index)
        self._streams.discard(stream)
        if stream.handle.stream is stream:
            stream.handle.stream = None
        self._wake_starved()

    # -- the stream task -------------------------------------------------------------------

    async def _run_stream(self, stream: _Stream) -> None:
        """Receive the stream's blocks. At the content's end the stream stays the handle's,
        its delivered blocks charged to the read-ahead budget until the reader reaches them
        (or the handle is released); a stream that fails or is stopped returns its budget."""
        handle = stream.handle
        at_end = False
        try:
            with stream.scope:
                await self._wait_permitted(stream, stream.first)
                start = stream.first * self._block_size
                async with self._client.open_range(handle.artifact, start) as body:
                    for index in range(stream.first, self._block_count(handle)):
                        await self._wait_permitted(stream, index)
                        length = self._block_length(handle, index)
                        data = await _receive_exactly(body, length)
                        self._stream_bytes += length
                        self._deliver(stream, index, data)
                at_end = True
        except SimvueError as exc:
            log.info("read-ahead of artifact %s stopped: %s", handle.artifact.id, exc)
        except Exception:
            # A bug below us must not take the mount down; readers retry on their own.
            log.exception("read-ahead of artifact %s failed", handle.artifact.id)
        finally:
            if at_end and not stream.stopped:
                self._streams.discard(stream)  # nothing left to claim: never starved
            else:
                self._stop(stream)
            stream.finished.set()

    async def _wait_permitted(self, stream: _Stream, index: int) -> None:
        while index >= stream.permitted_end:
            stream.wakeup = trio.Event()
            await stream.wakeup.wait()

    def _deliver(self, stream: _Stream, index: int, data: bytes) -> None:
        key = (stream.handle.key, index)
        flight = stream.claims.pop(index, None)
        if flight is not None:
            self._cache.finish(key, flight, data)
        elif not self._cache.contains(key):
            self._cache.put(key, data)
        else:
            return
        stream.handle.streamed.append(index)


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
async def open_reader(client: RangeSource, settings: Settings) -> AsyncIterator[Reader]:
    """Yield a :class:`Reader` whose read-ahead tasks live until the block exits.

    Also tunes the C allocator for block-sized buffers (:func:`keep_freed_blocks`).
    """
    keep_freed_blocks(settings.block_size)
    async with trio.open_nursery() as nursery:
        reader = Reader(client, settings, nursery)
        try:
            yield reader
        finally:
            nursery.cancel_scope.cancel()
            log.debug("reader statistics: %s", reader.statistics())


def _hash_into(digest: hashlib._Hash, pieces: list[bytes]) -> None:
    """Feed *pieces* to *digest* (in a worker thread: hashlib releases the GIL)."""
    for piece in pieces:
        digest.update(piece)


async def _receive_exactly(body: RangeBody, length: int) -> bytes:
    """Receive exactly *length* bytes from *body*; ProtocolError if it ends first."""
    chunks: list[bytes] = []
    missing = length
    while missing > 0:
        chunk = await body.receive(missing)
        if not chunk:
            raise ProtocolError(f"storage ended the body {missing} bytes early")
        chunks.append(chunk[:missing])
        missing -= len(chunks[-1])
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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

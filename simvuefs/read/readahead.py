"""Read-ahead: concurrent part GETs steered by each handle's sequential run, within a budget.

The shape follows mountpoint-s3's prefetcher over the AWS CRT's client: the
:class:`Prefetcher` (one per reader) steers; a handle's :class:`PartStream` fetches the blocks
ahead of its reader as *parts* (runs of up to ``part_blocks`` blocks, each one bounded Range
GET on a connection of its own), several at once; its window is the backpressure; the
:class:`ReadAheadBudget` caps what all streams hold ahead of their readers; a handle's
:class:`Trail` is its seek window, the streamed blocks kept behind its reader.

Steering
    A handle whose earlier reads covered ``SEQUENTIAL_RUN_BLOCKS`` blocks sequentially (its
    *run*: the byte span its recent reads covered, each starting within one block of it)
    gets a *stream* from the first block it lacks. The stream claims blocks ahead of the
    reader's furthest block (registering them as flights, so that any reader of those blocks
    waits for the stream instead of fetching). The number of blocks it may claim ahead, its
    window, starts at 1 and doubles each time the reader moves into a new block, up to
    ``readahead_per_file``, and the budget may hold it back further. The blocks are fetched
    in *parts* of ``part_blocks`` (``--read-part-size``), laid on a grid of the part size
    from the content's start (a part never crosses a multiple of the part size, so that
    with the default 4 MiB parts each fills one cell of the content cache, diskcache/,
    whole) and no larger than the window when they start (so the first ones are small): a
    part starts once a claim reaches it, with one GET to its end, and receives each of its
    blocks once it is claimed (TCP holds the rest back), so a starved stream still makes
    one request per part, never one per block.

    Every whole block a part receives, except the first of each request and any the reader
    held back, measures the link's rate per connection: over the request so far, since its
    first block (or since the reader last held it back). The number of parts in flight
    (``parallel``) starts at 1 and doubles, up to ``max_parts`` (``--read-streams``), each
    time the reader has to wait for a block while claimed blocks wait for a part and the
    last block measured came slower than ``FAST_PART_RATE`` (the link, not the reader or
    the CPU, is the bottleneck): a sequential read on a link capped per connection has as
    many parts in flight as its window holds within a few blocks of its start. It shrinks
    by one after each whole part the reader held back (the reader, hence the CPU, is the
    bound), or received while the last block came faster than ``FAST_PART_RATE``; parts
    then double in size up to the window (fewer requests). A part's rate is not compared
    with the rates seen with fewer parts in flight: a stall of the daemon, or blocks the
    socket had buffered, made such comparisons read a loaded CPU as a crowded link and
    took a field read from 16 parts to 1 within half a second (docs/performance.md,
    "window (session 7)"). A reader that a single connection
    keeps ahead of (loopback) costs one connection at a time. A part receiving its last
    block is *draining*: one such part is not counted in ``parallel``, so the next part's
    request (a round trip) overlaps that block instead of following it.

    A read outside the stream's reach (a seek, an isolated page-cache miss) leaves the
    stream alone; only a new sequential run elsewhere replaces it. :meth:`Prefetcher.release`
    stops it.

    Streamed blocks are transient: once the reader is ``STREAM_TRAIL_BLOCKS`` past them they
    are dropped from the cache (the kernel's page cache holds what was read), so a long
    sequential read recycles a window's worth of memory instead of filling the cache with
    data read once; so are the blocks of the run fetched before its stream started.

Order
    Parts arrive in any order; each block goes into the cache (resolving its claim) as soon
    as it is complete, so readers, which consume blocks in order, get the bytes in order,
    and the content check (read/verify.py) is fed from the reads, in order.

Memory
    Blocks claimed ahead of their reader never exceed ``readahead_per_file`` per handle nor
    ``readahead_total`` over all handles. Those delivered are *pinned* in the cache
    (:class:`BlockCache`) until the reader reaches them or the stream stops: nothing evicts
    them, and they are not counted in ``cache_bytes``, so the blocks in memory never exceed
    ``cache_bytes`` + ``readahead_total`` and a window may be as large as the cache (or
    larger) without its blocks evicting each other before they are read. A stream claims
    at most an even share of the total
    (:attr:`ReadAheadBudget.share`: the total over the streams still claiming; at least one
    block), so that no stream starves the others' readers. Each part in flight holds at
    most one partly received block outside the cache; at most ``max_parts`` + 1 parts per
    stream are in flight (one of them draining).

Errors
    A part whose connection breaks or stalls (the backend's read timeout) is resumed alone
    from its first missing block, up to ``PART_ATTEMPTS`` attempts in a row that bring no
    block; the other parts carry on. Then, or on any other error, the stream stops and
    abandons its claims: readers waiting on them fetch those blocks themselves and see the
    error, if it persists, from their own request (EIO within their deadline); the next
    sequential read starts a new stream.

Where things happen
    Blocks are claimed in :meth:`PartStream.extend` and parts queued in
    :meth:`PartStream._start_parts`, started in :meth:`Prefetcher._run_stream`, fetched in
    :meth:`Prefetcher._fetch_part` (a body that can fill a buffer, ``BlockBody``: each block
    in one call, straight from the socket, :func:`_fill_exactly`) and delivered to the cache
    by :meth:`PartStream.deliver`.

Concurrency
    Steering (the run detector, windows, claims, the budget) is synchronous, hence
    consistent; only the stream and part tasks await.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass
from typing import cast

import trio

from simvuefs.backends.protocol import BlockBody, RangeBody, RangeSource
from simvuefs.config import Settings
from simvuefs.errors import ProtocolError, SimvueError, TransportError
from simvuefs.read.blocks import ContentBlocks
from simvuefs.read.cache import BlockCache, Flight

log = logging.getLogger(__name__)

STREAM_TRAIL_BLOCKS = 2
"""Streamed blocks kept behind a reader's position: the kernel's concurrent reads of one
region arrive slightly out of order."""
SEQUENTIAL_RUN_BLOCKS = 2
"""A handle's run is sequential once earlier reads covered this many blocks in order: the
kernel cuts one big read (a 1 MiB buffer at a random offset) into several requests that
follow each other, which must not look sequential."""
FAST_PART_RATE = 100 * 1024 * 1024
"""Bytes per second from which one connection is fast enough: the parts in flight grow
only while the last block measured came more slowly (object storage serves 50-90 MB/s per
connection; loopback several times this), so a reader slowed by the CPU does not get
connections that would only cost more CPU."""
PART_ATTEMPTS = 3
"""Attempts in a row that bring no block before a part gives up (module docstring)."""
RESUMABLE_ERRORS = (TransportError, ProtocolError)
"""A part failing with these (a broken, stalled or short body) is resumed."""


@dataclass(frozen=True, slots=True)
class ReadAheadStats:
    """Counters of a :class:`Prefetcher`: see :class:`simvuefs.read.reader.ReaderStats`."""

    streams_started: int
    stream_bytes: int
    parts_started: int
    parts_resumed: int
    parts_in_flight_peak: int
    readahead_bytes: int
    readahead_peak: int
    readahead_peak_per_handle: int


class ReadAheadBudget:
    """The bytes all streams hold claimed ahead of their readers (never above *cap*), and
    the streams that may still claim, which are woken when bytes are given back. A stream
    holds at most its :attr:`share` of them (or one block)."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._used = 0
        self._peak = 0
        self._peak_per_handle = 0
        self._streams: set[PartStream] = set()

    @property
    def used(self) -> int:
        return self._used

    @property
    def peak(self) -> int:
        return self._peak

    @property
    def peak_per_handle(self) -> int:
        return self._peak_per_handle

    def add(self, stream: PartStream) -> None:
        """Wake *stream* when bytes are given back while it is starved."""
        self._streams.add(stream)

    def discard(self, stream: PartStream) -> None:
        """*stream* claims no more (stopped, or it reached the content's end)."""
        self._streams.discard(stream)

    @property
    def share(self) -> int:
        """What one stream may hold: the cap split evenly between the streams that still
        claim, so that none starves the others' readers."""
        return self._cap // max(1, len(self._streams))

    def take(self, length: int, held: int) -> bool:
        """Charge *length* bytes to a stream that then holds *held*; False if over the cap,
        or if *held* is over the stream's share and more than this block."""
        if self._used + length > self._cap or (held > length and held > self.share):
            return False
        self._used += length
        self._peak = max(self._peak, self._used)
        self._peak_per_handle = max(self._peak_per_handle, held)
        return True

    def give_back(self, length: int) -> None:
        self._used -= length

    def wake_starved(self) -> None:
        """Let every stream that ran out of budget and is below its share claim again (one
        at its share could not: waking it would only cost CPU)."""
        share = self.share
        for stream in [s for s in self._streams if s.starved and s.ahead_bytes < share]:
            stream.extend()


class PartStream:
    """One handle's read-ahead from block *first* on: claimed blocks and the parts that
    fetch them.

    Blocks ``[first, permitted_end)`` may be received: those that were neither cached nor
    in flight when permitted are claimed (flights held until delivered or abandoned).
    Claimed blocks after the consumer, the reader's furthest block, are read-ahead and
    charged to the budget until the reader reaches them or the stream stops. Parts cover
    ``[first, parts_end)`` in runs of at most *part_blocks* blocks on the grid of the part
    size: a part starts once its first block is claimed, opens its GET to its end, and
    receives each block once it is permitted (TCP holds the rest back); at most
    ``parallel`` parts are queued (:meth:`next_part`) or in flight, not counting one
    :meth:`draining`, from *parallel* up to *max_parts* (:meth:`reader_waited`, from the
    rates :meth:`block_received` measures). ``starved`` is True when the budget stopped the last
    :meth:`extend` short of the window. ``scope`` bounds the stream's task and its parts'
    tasks; ``finished`` is set when they ended.
    """

    __slots__ = (
        "_ahead",
        "_ahead_bytes",
        "_budget",
        "_cache",
        "_claims",
        "_consumer",
        "_draining",
        "_in_flight",
        "_last_rate",
        "_link_slow",
        "_max_parts",
        "_may_grow",
        "_max_window",
        "_parallel",
        "_part_blocks",
        "_part_size",
        "_parts_end",
        "_permitted_end",
        "_queue",
        "_wakeup",
        "_window",
        "blocks",
        "finished",
        "first",
        "in_flight_peak",
        "scope",
        "starved",
        "stopped",
    )

    def __init__(
        self,
        blocks: ContentBlocks,
        first: int,
        consumer: int,
        *,
        max_window: int,
        part_blocks: int,
        max_parts: int,
        cache: BlockCache,
        budget: ReadAheadBudget,
        parallel: int = 1,
    ) -> None:
        self.blocks = blocks
        self.first = first
        self._consumer = consumer
        self._window = min(1, max_window)
        self._max_window = max_window
        self._part_blocks = part_blocks
        self._part_size = part_blocks
        self._max_parts = max_parts
        self._cache = cache
        self._budget = budget
        self._permitted_end = first
        self._parts_end = first
        self._claims: dict[int, Flight[bytes]] = {}
        self._ahead: dict[int, int] = {}  # claimed block index -> bytes charged to the budget
        self._ahead_bytes = 0
        self._queue: deque[range] = deque()
        self._in_flight = 0
        self._draining = 0  # parts in flight receiving their last block
        self._parallel = min(parallel, max_parts)
        self._link_slow = False
        self._last_rate = 0.0  # bytes/s of the last block measured (logged)
        self._may_grow = False
        self.in_flight_peak = 0
        self.starved = False
        self.stopped = False
        self.scope = trio.CancelScope()
        self._wakeup = trio.Event()
        self.finished = trio.Event()

    @property
    def ahead_bytes(self) -> int:
        """Bytes claimed ahead of the reader, charged to the budget."""
        return self._ahead_bytes

    def covers(self, first: int, last: int) -> bool:
        """True if blocks *first*..*last* are where this stream is or is about to be."""
        return self.first <= last and first <= self._permitted_end + self._window

    def advance(self, last: int) -> None:
        """The reader reached block *last*: widen the window and release what it consumed."""
        if last > self._consumer:
            self._consumer = last
            self._window = min(self._window * 2, self._max_window)
            released = False
            while self._ahead:
                index = next(iter(self._ahead))
                if index > last:
                    break
                self._unreserve(index)
                released = True
            if released:
                self._budget.wake_starved()
        self.extend()

    def extend(self) -> None:
        """Permit and claim blocks up to the window past the consumer, within the budget;
        then start the parts their claims need."""
        limit = min(self._consumer + self._window + 1, self.blocks.count)
        index = self._permitted_end
        while index < limit:
            key = self.blocks.cache_key(index)
            if not self._cache.contains(key):
                if index > self._consumer and not self._reserve(index):
                    break
                self._claims[index] = self._cache.start(key)
            index += 1
        self.starved = index < limit
        if index > self._permitted_end:
            self._permitted_end = index
            self._wake()
        self._start_parts()

    def _start_parts(self) -> None:
        """Queue parts for claimed blocks that have none, as many as ``parallel`` allows
        (draining parts not counted)."""
        while self._parts_end < self._permitted_end and self._pacing < self._parallel:
            start = self._parts_end
            while start < self._permitted_end and start not in self._claims:
                start += 1  # cached or in flight elsewhere when permitted: no part needed
            self._parts_end = start
            if start >= self._permitted_end:
                break
            aligned = (start // self._part_size + 1) * self._part_size
            small = start + self._window  # small while the window is
            self._parts_end = min(aligned, small, self.blocks.count)
            self._queue.append(range(start, self._parts_end))
            self._wake()
        if self.exhausted:
            self._wake()

    @property
    def _pacing(self) -> int:
        """Parts queued or in flight that the link paces: all but one receiving its last
        block (*draining*), so that the next part's request overlaps that block; at most
        ``max_parts`` + 1 in flight."""
        return self._in_flight + len(self._queue) - min(self._draining, 1)

    def reader_waited(self) -> None:
        """The reader waited for a block: if claimed blocks wait for a part because
        ``parallel`` parts are busy and the last block measured came slower than
        ``FAST_PART_RATE``, allow twice as many (up to ``max_parts``; once per slow block
        measured)."""
        if (
            self._may_grow
            and self._parts_end < self._permitted_end
            and self._parallel < self._max_parts
        ):
            self._may_grow = False
            log.debug(
                "%s: parts at once %d -> %d (the reader waits; last block at %.0f MiB/s)",
                self.blocks.artifact.id,
                self._parallel,
                min(2 * self._parallel, self._max_parts),
                self._last_rate / 2**20,
            )
            self._parallel = min(2 * self._parallel, self._max_parts)
            self._start_parts()

    def block_received(self, seconds: float) -> None:
        """A part received whole blocks in *seconds* each on average since the first block
        of its request (or since the reader last held it back): the link's rate per
        connection, measured every block over the request so far (one block's own interval
        is no measure: a block already buffered by the socket comes at once)."""
        rate = self.blocks.block_size / seconds if seconds > 0 else float("inf")
        self._last_rate = rate
        self._link_slow = self._may_grow = rate < FAST_PART_RATE

    def draining(self) -> None:
        """A part in flight receives its last block: the next part may start (overlap)."""
        self._draining += 1
        self._start_parts()

    @property
    def exhausted(self) -> bool:
        """True once parts cover every block to the content's end."""
        return self._parts_end >= self.blocks.count and not self._queue

    async def next_part(self) -> range | None:
        """Wait for the next part to fetch (counted in flight from now on); None once the
        stream is exhausted."""
        while not self._queue:
            if self.exhausted:
                return None
            await self._wakeup.wait()
        self._in_flight += 1
        self.in_flight_peak = max(self.in_flight_peak, self._in_flight)
        return self._queue.popleft()

    @property
    def permitted_end(self) -> int:
        return self._permitted_end

    async def wait_permitted(self, index: int) -> None:
        """Wait until block *index* may be received."""
        while index >= self._permitted_end:
            await self._wakeup.wait()

    def part_done(self, received: int, waited: bool, drained: bool) -> None:
        """A part delivered all its blocks, *received* bytes (*waited*: the reader held it
        back; *drained*: it was counted draining). After a whole part, if it waited or the
        last block measured came faster than ``FAST_PART_RATE``, one part fewer at once
        and parts twice as large (up to the window: fewer requests); else parts of
        ``part_blocks`` again. Then start the next."""
        self._in_flight -= 1
        self._draining -= drained
        if received >= self._part_blocks * self.blocks.block_size:
            if waited or not self._link_slow:
                log.debug(
                    "%s: parts at once %d -> %d (%s; last block at %.0f MiB/s)",
                    self.blocks.artifact.id,
                    self._parallel,
                    max(1, self._parallel - 1),
                    "held back" if waited else "link fast",
                    self._last_rate / 2**20,
                )
                self._parallel = max(1, self._parallel - 1)
                self._part_size = min(2 * self._part_size, self._max_window)
            else:
                self._part_size = self._part_blocks
        self._start_parts()

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = trio.Event()

    def deliver(self, index: int, data: bytes) -> bool:
        """Put block *index* into the cache (resolving its claim), pinned while it is ahead
        of the reader (charged to the budget); False if it was there."""
        key = self.blocks.cache_key(index)
        pinned = index in self._ahead
        flight = self._claims.pop(index, None)
        if flight is not None:
            self._cache.finish(key, flight, data, pinned=pinned)
        elif not self._cache.contains(key):
            self._cache.put(key, data, pinned=pinned)
        else:
            return False
        return True

    def stop(self) -> None:
        """Stop now: cancel the tasks, abandon the claims, return the budget. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.scope.cancel()
        self._queue.clear()
        for index, flight in self._claims.items():
            self._cache.abandon(self.blocks.cache_key(index), flight)
        self._claims.clear()
        for index in list(self._ahead):
            self._unreserve(index)
        self._budget.discard(self)
        self._budget.wake_starved()

    def _reserve(self, index: int) -> bool:
        length = self.blocks.length(index)
        if not self._budget.take(length, self._ahead_bytes + length):
            return False
        self._ahead[index] = length
        self._ahead_bytes += length
        return True

    def _unreserve(self, index: int) -> None:
        """Block *index* is no longer ahead of the reader: return its bytes to the budget
        and unpin it (if it was delivered)."""
        length = self._ahead.pop(index)
        self._ahead_bytes -= length
        self._budget.give_back(length)
        self._cache.unpin(self.blocks.cache_key(index))


class Trail:
    """The cached blocks a handle's streams delivered (its seek window), dropped lowest
    first; parts deliver out of order, so they are kept in a heap."""

    __slots__ = ("_cache", "_indexes", "blocks")

    def __init__(self, blocks: ContentBlocks, cache: BlockCache) -> None:
        self.blocks = blocks
        self._cache = cache
        self._indexes: list[int] = []

    def add(self, index: int) -> None:
        heapq.heappush(self._indexes, index)

    def adopt(self, indexes: range) -> None:
        """Treat blocks *indexes* as streamed."""
        known = set(self._indexes)
        for index in indexes:
            if index not in known:
                heapq.heappush(self._indexes, index)

    def drop_before(self, index: int) -> None:
        """Drop the blocks before *index* from the cache, lowest first."""
        while self._indexes and self._indexes[0] < index:
            self._cache.discard(self.blocks.cache_key(heapq.heappop(self._indexes)))


class HandlePrefetch:
    """One handle's read-ahead: its run, its stream (None if it has none), its trail.

    The run is the byte span ``[run_start, run_end)`` covered by the handle's recent reads,
    each of which started within one block of the span; ``run_end`` is None before the
    first read.
    """

    __slots__ = ("_run_end", "_run_start", "blocks", "stream", "trail")

    def __init__(self, blocks: ContentBlocks, cache: BlockCache) -> None:
        self.blocks = blocks
        self._run_start = 0
        self._run_end: int | None = None
        self.stream: PartStream | None = None
        self.trail = Trail(blocks, cache)

    @property
    def run_start(self) -> int:
        return self._run_start

    def follow(self, off: int, end: int) -> int | None:
        """Account a read of ``[off, end)``: extend the run and return its length before, or
        (None) start a new run if the read is more than a block away from it."""
        size = self.blocks.block_size
        if self._run_end is None or not self._run_start - size <= off <= self._run_end + size:
            self._run_start, self._run_end = off, end
            return None
        earlier = self._run_end - self._run_start
        self._run_start = min(self._run_start, off)
        self._run_end = max(self._run_end, end)
        return earlier

    def detach(self, stream: PartStream) -> None:
        """*stream* ended: forget it unless another replaced it already."""
        if self.stream is stream:
            self.stream = None


class Prefetcher:
    """Steers every handle's read-ahead: starts, moves and stops streams; see the module
    docstring. Stream tasks run in *nursery*; blocks go into *cache*."""

    def __init__(
        self, source: RangeSource, cache: BlockCache, settings: Settings, nursery: trio.Nursery
    ) -> None:
        self._source = source
        self._cache = cache
        self._nursery = nursery
        self._block_size = settings.block_size
        self._max_window = settings.readahead_per_file // settings.block_size
        self._part_blocks = max(1, settings.read_part_size // settings.block_size)
        self._max_parts = settings.read_streams
        self._budget = ReadAheadBudget(settings.readahead_total)
        self._streams_started = self._stream_bytes = 0
        self._parts_started = self._parts_resumed = self._in_flight_peak = 0

    def open(self, blocks: ContentBlocks) -> HandlePrefetch:
        """Return the read-ahead state of a new handle on *blocks*."""
        return HandlePrefetch(blocks, self._cache)

    def steer(self, prefetch: HandlePrefetch, off: int, end: int, first: int, last: int) -> bool:
        """Account a read of ``[off, end)`` (blocks *first*..*last*): extend or restart the
        handle's run, move its stream along, or start a stream for a sequential run. Return
        True if the read continues a sequential run (``SEQUENTIAL_RUN_BLOCKS``)."""
        earlier = prefetch.follow(off, end)
        if earlier is None:
            earlier = 0
        else:
            prefetch.trail.drop_before(first - STREAM_TRAIL_BLOCKS)
        stream = prefetch.stream
        sequential = earlier >= SEQUENTIAL_RUN_BLOCKS * self._block_size
        if stream is not None and stream.covers(first, last):
            stream.advance(last)
        elif sequential and last > prefetch.run_start // self._block_size:
            self._start_stream(prefetch, first, last)
        return sequential

    async def release(self, prefetch: HandlePrefetch) -> None:
        """The handle is closed: stop its stream (before this returns), drop its trail."""
        stream = prefetch.stream
        if stream is not None:
            self._stop(prefetch, stream)
            await stream.finished.wait()
        prefetch.trail.drop_before(prefetch.blocks.count)

    def reader_waits(self, prefetch: HandlePrefetch) -> None:
        """A read of *prefetch*'s handle is about to wait for blocks in flight."""
        if prefetch.stream is not None:
            prefetch.stream.reader_waited()

    def statistics(self) -> ReadAheadStats:
        """Return the counters."""
        return ReadAheadStats(
            streams_started=self._streams_started,
            stream_bytes=self._stream_bytes,
            parts_started=self._parts_started,
            parts_resumed=self._parts_resumed,
            parts_in_flight_peak=self._in_flight_peak,
            readahead_bytes=self._budget.used,
            readahead_peak=self._budget.peak,
            readahead_peak_per_handle=self._budget.peak_per_handle,
        )

    def _start_stream(self, prefetch: HandlePrefetch, first: int, last: int) -> None:
        """Stream from the first block at or after *first* that is neither cached nor in
        flight (looking one window ahead), unless the handle's stream already covers it."""
        blocks = prefetch.blocks
        limit = min(first + self._max_window + 1, blocks.count)
        start = first
        while start < limit and self._cache.contains(blocks.cache_key(start)):
            start += 1
        if start >= limit:
            return
        if prefetch.stream is not None:
            if prefetch.stream.covers(start, start):
                prefetch.stream.advance(last)
                return
            self._stop(prefetch, prefetch.stream)
        stream = PartStream(
            blocks,
            start,
            consumer=last,
            max_window=self._max_window,
            part_blocks=self._part_blocks,
            max_parts=self._max_parts,
            cache=self._cache,
            budget=self._budget,
        )
        # The run's blocks fetched before it was known to be sequential go like streamed ones.
        prefetch.trail.adopt(range(prefetch.run_start // self._block_size, min(start, first)))
        prefetch.stream = stream
        self._budget.add(stream)
        self._streams_started += 1
        log.debug("streaming %s from block %d", blocks.artifact.id, start)
        stream.extend()
        self._nursery.start_soon(self._run_stream, prefetch, stream)

    def _stop(self, prefetch: HandlePrefetch, stream: PartStream) -> None:
        stream.stop()
        prefetch.detach(stream)

    async def _run_stream(self, prefetch: HandlePrefetch, stream: PartStream) -> None:
        """Fetch *stream*'s parts as they are claimed, each in a task of its own. At the
        content's end the stream stays the handle's, its delivered blocks charged to the
        read-ahead budget until the reader reaches them (or the handle is released); a
        stream that is stopped returns its budget."""
        at_end = False
        try:
            with stream.scope:
                async with trio.open_nursery() as parts:
                    while (part := await stream.next_part()) is not None:
                        self._parts_started += 1
                        self._in_flight_peak = max(self._in_flight_peak, stream.in_flight_peak)
                        parts.start_soon(self._fetch_part, prefetch, stream, part)
                at_end = True
        finally:
            if at_end and not stream.stopped:
                self._budget.discard(stream)  # nothing left to claim: never starved
            else:
                self._stop(prefetch, stream)
            stream.finished.set()

    async def _fetch_part(self, prefetch: HandlePrefetch, stream: PartStream, part: range) -> None:
        """Fetch blocks *part* with one bounded GET, delivering each block once it is
        permitted and complete; resume alone after a broken or stalled body, stop the
        stream when that does not help (module docstring, "Errors")."""
        blocks = stream.blocks
        artifact = blocks.artifact
        index, barren = part.start, 0
        received, waited, drained = 0, False, False
        began = trio.current_time()
        try:
            while index < part.stop:
                await stream.wait_permitted(index)
                end = blocks.start(part.stop - 1) + blocks.length(part.stop - 1)
                try:
                    async with self._source.open_range(
                        artifact, blocks.start(index), end - 1
                    ) as body:
                        block_body = body if isinstance(body, BlockBody) else None
                        # When the first timed block came, and the whole blocks since: the
                        # rate over the request, not per block (a block already in the
                        # socket's buffer comes at once, which says nothing of the link).
                        since: float | None = None
                        timed = 0
                        while index < part.stop:
                            if index >= stream.permitted_end:
                                waited = True  # the reader, not the link, holds it back
                                since, timed = None, 0
                                await stream.wait_permitted(index)
                            if index == part.stop - 1 and not drained:
                                drained = True
                                stream.draining()
                            length = blocks.length(index)
                            data = await (
                                _receive_exactly(body, length)
                                if block_body is None
                                else _fill_exactly(block_body, length)
                            )
                            now = trio.current_time()
                            if since is None or len(data) != blocks.block_size:
                                since, timed = now, 0
                            else:
                                timed += 1
                                stream.block_received((now - since) / timed)
                            received += len(data)
                            self._stream_bytes += len(data)
                            if stream.deliver(index, data):
                                prefetch.trail.add(index)
                            index, barren = index + 1, 0
                except RESUMABLE_ERRORS as exc:
                    barren += 1
                    if barren >= PART_ATTEMPTS:
                        raise
                    self._parts_resumed += 1
                    log.debug(
                        "artifact %s: %s; resuming the part at block %d", artifact.id, exc, index
                    )
            seconds = trio.current_time() - began
            log.debug("part %s: %d bytes in %.3f s (waited: %s)", part, received, seconds, waited)
            stream.part_done(received, waited, drained)
        except SimvueError as exc:
            log.info("read-ahead of artifact %s stopped: %s", artifact.id, exc)
            self._stop(prefetch, stream)
        except Exception:
            # A bug below us must not take the mount down; readers fetch on their own.
            log.exception("read-ahead of artifact %s failed", artifact.id)
            self._stop(prefetch, stream)


async def _fill_exactly(body: BlockBody, length: int) -> bytes:
    """Receive exactly *length* bytes from *body* straight into a new block, in one call;
    ProtocolError if it ends first.

    The block is a ``bytearray`` (the only buffer Python lets a socket read fill), typed as
    the ``bytes`` every block is: nothing writes to a block once it is delivered, and
    everything that takes blocks (the cache, slicing, ``b"".join``, hashlib, pyfuse3's
    reply) takes either. Against :func:`_receive_exactly`: no bytes object per socket read,
    no join, and one call per block instead of one per socket read (docs/performance.md,
    session 8)."""
    block = bytearray(length)
    got = await body.readinto(memoryview(block))
    if got < length:
        raise ProtocolError(f"storage ended the body {length - got} bytes early")
    return cast(bytes, block)


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

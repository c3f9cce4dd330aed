"""Read-ahead: runs, part streams, their windows, the shared budget and the trail.

The first part drives the pieces of :mod:`simvuefs.read.readahead` directly over a
:class:`BlockCache`; the second drives a whole reader against ``FakeStorage``
(tests/reader_util.py), no server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from reader_util import (
    ARTIFACT,
    BLOCK,
    CONTENT,
    READ,
    FakeStorage,
    make_artifact,
    make_content,
    make_settings,
    read_through,
    read_through_from,
)

from simvuefs.diskcache.source import CachingSource
from simvuefs.diskcache.store import CELL, ContentStore
from simvuefs.read.blocks import ContentBlocks
from simvuefs.read.cache import BlockCache, Flight, FlightAbandoned
from simvuefs.read.readahead import PART_ATTEMPTS, HandlePrefetch, PartStream, ReadAheadBudget
from simvuefs.read.reader import open_reader

BLOCKS = ContentBlocks(ARTIFACT, len(CONTENT), BLOCK)  # 65 blocks, the last 123 bytes


def new_stream(
    cache: BlockCache,
    budget: ReadAheadBudget,
    first: int = 0,
    max_window: int = 8,
    part_blocks: int = 64,
    max_parts: int = 64,
) -> PartStream:
    stream = PartStream(
        BLOCKS,
        first,
        consumer=first,
        max_window=max_window,
        part_blocks=part_blocks,
        max_parts=max_parts,
        cache=cache,
        budget=budget,
        parallel=max_parts,
    )
    budget.add(stream)
    return stream


def claimed(cache: BlockCache) -> int:
    return cache.statistics().in_flight


def test_content_blocks_cut_the_content_into_full_blocks_and_a_short_last_one() -> None:
    assert BLOCKS.count == 65
    assert [BLOCKS.length(i) for i in (0, 63, 64)] == [BLOCK, BLOCK, 123]
    assert BLOCKS.start(3) == 3 * BLOCK
    assert BLOCKS.cache_key(7) == (ARTIFACT.checksum, 7)
    assert ContentBlocks(ARTIFACT, 0, BLOCK).count == 0


def test_a_run_grows_with_reads_within_a_block_of_it_and_restarts_elsewhere() -> None:
    prefetch = HandlePrefetch(BLOCKS, BlockCache(64 * BLOCK))
    assert prefetch.follow(0, READ) is None  # the first read starts a run
    assert prefetch.follow(READ, 2 * READ) == READ  # the run's length before this read
    assert prefetch.follow(BLOCK + 2 * READ, BLOCK + 3 * READ) == 2 * READ  # a block away
    assert prefetch.run_start == 0
    assert prefetch.follow(10 * BLOCK, 10 * BLOCK + READ) is None  # a seek: a new run
    assert prefetch.run_start == 10 * BLOCK
    assert prefetch.follow(9 * BLOCK, 9 * BLOCK + READ) == READ  # just behind it: the same run
    assert prefetch.run_start == 9 * BLOCK


def test_the_budget_refuses_what_exceeds_its_cap_and_keeps_peaks() -> None:
    budget = ReadAheadBudget(3 * BLOCK)
    assert budget.take(BLOCK, held=BLOCK)
    assert budget.take(BLOCK, held=2 * BLOCK)  # the same stream's second block
    assert budget.take(BLOCK, held=BLOCK)  # another stream's first
    assert not budget.take(1, held=2 * BLOCK + 1)
    budget.give_back(2 * BLOCK)
    assert (budget.used, budget.peak, budget.peak_per_handle) == (BLOCK, 3 * BLOCK, 2 * BLOCK)
    assert budget.take(2 * BLOCK, held=2 * BLOCK)


async def test_a_stream_window_starts_at_one_block_and_doubles_as_the_reader_moves() -> None:
    cache = BlockCache(64 * BLOCK)
    budget = ReadAheadBudget(32 * BLOCK)
    stream = new_stream(cache, budget, part_blocks=1)
    stream.extend()
    assert claimed(cache) == 2  # the consumer's block and a window of 1 ahead
    assert budget.used == BLOCK  # only what lies ahead of the reader is charged
    for last, window in ((1, 2), (2, 4), (3, 8), (4, 8)):
        stream.advance(last)
        assert budget.used == window * BLOCK
        assert claimed(cache) == last + window + 1
        assert stream.covers(last + window, last + window)
    assert not stream.covers(22, 22)  # more than a window past what it may receive (13)
    stream.stop()
    assert (budget.used, claimed(cache)) == (0, 0)


async def test_parts_grow_with_the_window_even_when_the_budget_permits_one_block() -> None:
    cache = BlockCache(64 * BLOCK)
    budget = ReadAheadBudget(BLOCK)
    stream = new_stream(cache, budget, part_blocks=4)
    stream.extend()
    assert claimed(cache) == 2  # blocks 0 and 1 (charged)
    for last in range(1, 7):
        stream.advance(last)
    assert (claimed(cache), stream.starved) == (8, True)  # blocks 0-7: one ahead at a time
    with trio.fail_after(1):
        parts = [await stream.next_part() for _ in range(4)]
    # no larger than the window when they start, then whole: one GET per part, not per block
    assert parts == [range(1), range(1, 2), range(2, 4), range(4, 8)]
    stream.stop()


async def test_a_stream_delivers_into_its_claims_and_reading_releases_the_budget() -> None:
    cache = BlockCache(64 * BLOCK)
    budget = ReadAheadBudget(32 * BLOCK)
    stream = new_stream(cache, budget)
    stream.extend()
    flight = cache.lookup(BLOCKS.cache_key(1))
    assert isinstance(flight, Flight)  # a reader of block 1 would wait for the stream
    assert stream.deliver(0, CONTENT[:BLOCK])
    assert stream.deliver(1, CONTENT[BLOCK : 2 * BLOCK])
    assert await flight.wait() == CONTENT[BLOCK : 2 * BLOCK]
    assert not stream.deliver(1, CONTENT[BLOCK : 2 * BLOCK])  # already there
    assert budget.used == BLOCK  # block 1 is delivered, but its reader has not reached it
    stream.advance(1)
    assert budget.used == 2 * BLOCK  # block 1 released; blocks 2-3 claimed ahead


async def test_a_starved_stream_claims_once_another_gives_its_budget_back() -> None:
    cache = BlockCache(64 * BLOCK)
    budget = ReadAheadBudget(BLOCK)
    greedy = new_stream(cache, budget, first=0)
    greedy.extend()
    starved = new_stream(cache, budget, first=30)
    starved.extend()
    assert starved.starved
    assert claimed(cache) == 3  # blocks 0, 1 and 30, not 31
    greedy.stop()
    assert not starved.starved
    assert claimed(cache) == 2  # blocks 30 and 31
    assert budget.used == BLOCK


async def test_streams_share_the_budget_evenly() -> None:
    cache = BlockCache(64 * BLOCK)
    budget = ReadAheadBudget(8 * BLOCK)
    first = new_stream(cache, budget, first=0)
    first.extend()
    for last in (1, 2, 3):
        first.advance(last)
    assert (first.permitted_end, budget.used) == (12, 8 * BLOCK)  # alone: the whole budget
    second = new_stream(cache, budget, first=30)
    second.extend()
    assert second.starved
    first.advance(7)  # blocks 4-7 read: four blocks given back, but half is its share now
    assert first.permitted_end == 12
    for last in (31, 32, 33):
        second.advance(last)
    assert second.permitted_end == 33 + 4 + 1
    assert budget.used == 8 * BLOCK
    first.stop()
    second.stop()


async def test_stopping_a_stream_abandons_its_claims_to_their_waiters() -> None:
    cache = BlockCache(64 * BLOCK)
    budget = ReadAheadBudget(32 * BLOCK)
    stream = new_stream(cache, budget)
    stream.extend()
    flight = cache.lookup(BLOCKS.cache_key(1))
    assert isinstance(flight, Flight)
    stream.stop()
    stream.stop()  # idempotent
    assert stream.scope.cancel_called
    with pytest.raises(FlightAbandoned):
        await flight.wait()


def test_the_trail_drops_the_streamed_blocks_behind_the_reader_oldest_first() -> None:
    cache = BlockCache(64 * BLOCK)
    prefetch = HandlePrefetch(BLOCKS, cache)
    for index in range(2, 6):
        cache.put(BLOCKS.cache_key(index), b"x")
        prefetch.trail.add(index)
    for index in range(2):  # fetched before the run was known to be sequential
        cache.put(BLOCKS.cache_key(index), b"x")
    prefetch.trail.adopt(range(3))
    prefetch.trail.drop_before(4)
    assert [cache.contains(BLOCKS.cache_key(i)) for i in range(6)] == [False] * 4 + [True] * 2
    prefetch.trail.drop_before(BLOCKS.count)
    assert cache.statistics().entries == 0


# -- a reader's streams, against FakeStorage ---------------------------------------------------


@pytest.mark.parametrize("fills", [False, True], ids=["received", "filled"])
async def test_sequential_read_is_exact_gets_for_the_first_block_then_parts(fills: bool) -> None:
    storage = FakeStorage((ARTIFACT, CONTENT), fills=fills)
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_through(reader, handle) == CONTENT
        await reader.release(handle)
        stats = reader.statistics()
    # blocks 0-1 read by read, exactly; a stream once two whole blocks were read in order
    assert (storage.range_gets, stats.exact_requests) == (2 * BLOCK // READ, 2 * BLOCK // READ)
    assert storage.bytes_sent == len(CONTENT)  # no byte twice
    assert stats.streams_started == 1
    assert storage.streams == stats.parts_started  # one GET per part
    assert all(end is not None and end - start < 8 * BLOCK for start, end in storage.ranges)
    assert stats.range_bytes + stats.stream_bytes == len(CONTENT)
    assert 0 < stats.readahead_peak_per_handle <= 8 * BLOCK
    assert (stats.readahead_bytes, stats.verified) == (0, 1)
    assert stats.open_handles == 0
    # streamed blocks were dropped behind the reader: the cache held about a window (8 ahead,
    # 2 behind), and keeps nothing after release
    assert stats.cache.peak_bytes <= 12 * BLOCK
    assert stats.cache.bytes == 0
    # a body that fills blocks is read one whole block per call
    assert storage.fills == (stats.stream_bytes // BLOCK + 1 if fills else 0)


async def test_parts_of_a_capped_storage_are_fetched_several_at_once_and_read_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = FakeStorage((ARTIFACT, CONTENT), chunk=512)
    storage.seconds_per_chunk = 0.01  # each connection: 50 KB/s
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        head = b""
        while len(head) < 16 * BLOCK:  # a quarter of the content
            head += await reader.read(handle, len(head), READ)
        # From the start of the run, the parts in flight doubled (1, 2, 4) while the reader
        # waited on a slow link: the window (8 blocks) holds 4 parts of 2 blocks, and one
        # more overlaps the last block of a part that is draining.
        assert storage.open_streams_peak == 5
        assert head + await read_through_from(reader, handle, len(head)) == CONTENT
        await reader.release(handle)
        stats = reader.statistics()
    assert stats.verified == 1  # fed in order
    assert storage.bytes_sent == len(CONTENT)
    assert stats.parts_in_flight_peak == storage.open_streams_peak == 5
    assert stats.readahead_peak_per_handle <= 8 * BLOCK
    # The parts tile the content after block 1, each fetched once, on the grid of the part
    # size (2 blocks), as the content cache's cells lie on theirs (4 MiB).
    spans = sorted((start, end) for start, end in storage.ranges if end is not None)
    assert (spans[0][0], spans[-1][1]) == (2 * BLOCK, len(CONTENT) - 1)
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:], strict=False))
    grid = 2 * BLOCK
    assert all(start // grid == end // grid for start, end in spans)  # none crosses it
    assert all(end - start + 1 == grid for start, end in spans[2:-1])  # whole once the
    # window has grown past the first blocks


async def test_a_capped_link_whose_blocks_come_in_bursts_still_gets_parts_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = FakeStorage((ARTIFACT, CONTENT), chunk=512)
    storage.seconds_per_chunk = 0.01  # each connection: 50 KB/s on average ...
    storage.burst = 24  # ... three blocks at a time: the second and third come at once
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_through(reader, handle) == CONTENT
        await reader.release(handle)
    # The rate is measured over each request, so the blocks that came at once do not make
    # the link look fast: the parts in flight grow nearly as on an even link (5, the test
    # above; 3 or 4 here, as trio's scheduling order goes); measured per block, they looked
    # fast and the peak stayed at 2 (12 runs of 12).
    assert 3 <= storage.open_streams_peak <= 5
    assert storage.bytes_sent == len(CONTENT)


async def test_a_capped_link_slowed_for_a_while_keeps_its_parts_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    content = make_content(256 * BLOCK)
    artifact = make_artifact("long.bin", content)
    storage = FakeStorage((artifact, content), chunk=512)
    storage.seconds_per_chunk = 0.01  # each connection: 50 KB/s ...
    storage.stall, storage.stall_factor = (0.5, 1.0), 3.0  # ... a third of it for 0.5 s
    settings = make_settings(
        readahead_per_file=32 * BLOCK, readahead_total=64 * BLOCK, read_streams=16
    )
    async with open_reader(storage, settings) as reader:
        handle = reader.open(artifact, len(content))
        assert await read_through(reader, handle) == content
        await reader.release(handle)
    # Every connection slowed at once says nothing of how many parts the link takes: once
    # grown, the parts in flight stay at what the window holds (16, and one draining). When
    # a part's rate was compared with the rates seen with fewer parts, the slowed parts
    # looked crowded and each one done removed a part (14.96 on average here, 16.55 now).
    grown = storage.open_streams_seen.index(storage.open_streams_peak)
    middle = storage.open_streams_seen[grown : len(storage.open_streams_seen) * 3 // 4]
    assert sum(middle) / len(middle) >= 16
    assert storage.bytes_sent == len(content)


async def test_a_cold_read_through_the_content_cache_stores_whole_cells_once(
    tmp_path: Path,
) -> None:
    mib = 1024 * 1024
    content = make_content(10 * CELL + mib // 2)
    artifact = make_artifact("cells.bin", content)
    storage = FakeStorage((artifact, content), chunk=64 * 1024)
    storage.seconds_per_chunk = 0.001  # each connection: 64 MB/s, slower than a fast link
    store = ContentStore(tmp_path)
    store.prepare()
    settings = make_settings(
        block_size=mib,
        cache_bytes=64 * mib,
        readahead_per_file=16 * mib,
        readahead_total=16 * mib,
        read_part_size=CELL,
        read_streams=4,
    )
    async with trio.open_nursery() as nursery:
        cache = CachingSource(storage, store, 1 << 30, nursery, writable=True)
        async with open_reader(cache, settings) as reader:
            handle = reader.open(artifact, len(content))
            assert await read_through(reader, handle, mib) == content
            await reader.release(handle)
            stats = reader.statistics()
        await cache.settled()
        nursery.cancel_scope.cancel()
    assert stats.parts_in_flight_peak > 1
    assert storage.bytes_sent == len(content)  # every byte fetched once ...
    parts = store.parts(artifact.checksum)
    assert sum(part.stop - part.start for part in parts) == len(content)  # ... and stored
    # Parts lie on the cells' grid: none crosses a cell, and past the first two cells (the
    # exact first reads, then parts no larger than the young window) every cell is one
    # part file, whole.
    assert all(p.start // CELL == (p.stop - 1) // CELL for p in parts)
    assert [(p.start, p.stop) for p in parts if p.start >= 2 * CELL] == [
        (start, min(start + CELL, len(content))) for start in range(2 * CELL, len(content), CELL)
    ]


async def test_a_fast_link_gets_one_connection_and_larger_parts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))  # no time passes: faster than any link
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_through(reader, handle) == CONTENT
        await reader.release(handle)
        stats = reader.statistics()
    # One part paces the link; the next one's request overlaps the last block of the one
    # before (draining).
    assert stats.parts_in_flight_peak == storage.open_streams_peak == 2
    sizes = [end - start + 1 for start, end in storage.ranges if end is not None]
    assert max(sizes) == 8 * BLOCK  # parts doubled up to the window (8 blocks)
    assert len(sizes) < (len(CONTENT) - 2 * BLOCK) // (2 * BLOCK)  # fewer than 2-block parts
    assert storage.bytes_sent == len(CONTENT)


@pytest.mark.parametrize("fills", [False, True], ids=["received", "filled"])
async def test_a_part_that_breaks_mid_way_is_resumed_alone(fills: bool) -> None:
    storage = FakeStorage((ARTIFACT, CONTENT), fills=fills)
    storage.stream_fail_at = BLOCK + 500  # in the second block of a part
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_through(reader, handle) == CONTENT
        await reader.release(handle)
        stats = reader.statistics()
    assert stats.parts_resumed == 1
    assert storage.streams == stats.parts_started + 1  # the resumption, nothing else again
    assert 0 < storage.bytes_sent - len(CONTENT) < BLOCK  # less than a block twice
    assert storage.range_gets == 2 * BLOCK // READ  # the reader never had to fetch itself


async def test_parts_that_keep_failing_leave_the_blocks_to_the_reader() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    storage.stream_fail_at = 0
    storage.stream_failures = 1000  # every part gives up
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_through(reader, handle) == CONTENT
        await reader.release(handle)
        stats = reader.statistics()
    assert stats.verified == 1
    assert stats.parts_resumed >= PART_ATTEMPTS - 1
    assert stats.streams_started > 1  # stopped, started again by the next sequential read
    # The reader fetched the blocks with bounded GETs of its own.
    assert storage.range_gets > 2 * BLOCK // READ


async def test_sixteen_concurrent_sequential_readers_stay_within_the_caps() -> None:
    contents = [make_content(24 * BLOCK + i * 77, seed=i) for i in range(4)]
    artifacts = [make_artifact(f"f{i}", c) for i, c in enumerate(contents)]
    storage = FakeStorage(*zip(artifacts, contents, strict=True), chunk=700)
    settings = make_settings(
        cache_bytes=40 * BLOCK, readahead_per_file=8 * BLOCK, readahead_total=12 * BLOCK
    )
    failures: list[str] = []
    async with open_reader(storage, settings) as reader:

        async def read_whole(i: int) -> None:
            which = i % 4
            handle = reader.open(artifacts[which], len(contents[which]))
            if await read_through(reader, handle, READ + i) != contents[which]:
                failures.append(f"reader {i}")
            await reader.release(handle)

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(read_whole, i)
        stats = reader.statistics()
    assert failures == []
    assert stats.streams_started >= 4
    assert stats.readahead_peak <= 12 * BLOCK
    assert stats.readahead_peak_per_handle <= 8 * BLOCK
    # Parts in flight: at most 4 per handle; over all, what the budget holds (parts of 2
    # blocks, each with at least one charged block) plus each handle's own block's.
    assert stats.parts_in_flight_peak <= 4
    assert storage.open_streams_peak <= 12 + 16
    assert stats.cache.peak_bytes <= 40 * BLOCK
    assert stats.cache.pinned_peak <= 12 * BLOCK  # pinned blocks are charged read-ahead
    assert (stats.readahead_bytes, stats.cache.in_flight, storage.open_streams) == (0, 0, 0)
    assert stats.cache.pinned_bytes == 0


async def test_blocks_a_finished_stream_delivered_stay_charged_until_read() -> None:
    content = make_content(12 * BLOCK)
    artifact = make_artifact("twelve.bin", content)
    storage = FakeStorage((artifact, content), chunk=BLOCK)
    settings = make_settings(readahead_per_file=8 * BLOCK, readahead_total=8 * BLOCK)
    async with open_reader(storage, settings) as reader:
        handle = reader.open(artifact, len(content))
        for index in range(6):  # the window grows to 8 blocks: the stream reaches the end
            assert (
                await reader.read(handle, index * BLOCK, BLOCK) == content[index * BLOCK :][:BLOCK]
            )
        await trio.testing.wait_all_tasks_blocked()
        assert storage.open_streams == 0
        # Blocks 6-11 wait in the cache for their reader: still read-ahead, so other files'
        # streams cannot take the budget (and fill the cache) meanwhile.
        assert reader.statistics().readahead_bytes == 6 * BLOCK
        for index in range(6, 12):
            assert (
                await reader.read(handle, index * BLOCK, BLOCK) == content[index * BLOCK :][:BLOCK]
            )
        assert reader.statistics().readahead_bytes == 0
        await reader.release(handle)
        stats = reader.statistics()
    assert (storage.range_gets, storage.streams) == (2, stats.parts_started)
    assert stats.readahead_peak <= 8 * BLOCK


async def test_a_window_larger_than_the_cache_is_pinned_and_never_evicted_before_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = FakeStorage((ARTIFACT, CONTENT), chunk=512)
    storage.seconds_per_chunk = 0.001  # slow enough that parts fill the window ahead
    settings = make_settings(
        cache_bytes=4 * BLOCK, readahead_per_file=32 * BLOCK, readahead_total=32 * BLOCK
    )
    pinned_at_reads: list[int] = []
    async with open_reader(storage, settings) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        data = b""
        while len(data) < len(CONTENT):
            data += await reader.read(handle, len(data), READ)
            await trio.sleep(0.01)  # a slow reader: the parts fill the window ahead of it
            pinned_at_reads.append(reader.statistics().cache.pinned_bytes)
        assert data == CONTENT
        await reader.release(handle)
        stats = reader.statistics()
    # The window grew to 8 times the cache, its delivered blocks pinned beside it (counted
    # against the read-ahead, not the cache) ...
    assert stats.readahead_peak > 4 * BLOCK
    assert 8 * BLOCK < max(pinned_at_reads) <= stats.readahead_peak <= 32 * BLOCK
    assert stats.cache.pinned_peak <= 32 * BLOCK
    assert stats.cache.peak_bytes <= 4 * BLOCK  # the kept blocks stay within the cache
    # ... and none was evicted before its reader came: every byte was sent once, no block
    # was fetched again by a read.
    assert storage.bytes_sent == len(CONTENT)
    assert stats.range_bytes == 2 * BLOCK  # the first two blocks, read before the run
    assert (stats.cache.pinned_bytes, stats.readahead_bytes) == (0, 0)


async def test_stream_stays_within_its_window_and_stops_on_release() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        for off in range(0, 6 * BLOCK, READ):
            await reader.read(handle, off, READ)
        await trio.testing.wait_all_tasks_blocked()
        # the reader is in block 5; what parts received reaches at most the window (8 blocks)
        # ahead (their GETs may reach further: TCP holds the rest back)
        assert storage.bytes_sent <= (5 + 1 + 8) * BLOCK
        await reader.release(handle)
        assert storage.open_streams == 0
        stats = reader.statistics()
        assert (stats.readahead_bytes, stats.cache.in_flight) == (0, 0)


async def test_closing_the_reader_stops_streams_of_open_handles() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT), chunk=BLOCK)
    storage.body_gate = trio.Event()  # parts stall after their first block, for good
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        await reader.read(handle, 0, 2 * BLOCK)
        for index in (2, 3):  # the first blocks of parts [2, 3) and [3, 5)
            assert await reader.read(handle, index * BLOCK, READ) == CONTENT[index * BLOCK :][:READ]
        await trio.testing.wait_all_tasks_blocked()
        assert storage.open_streams > 0
    assert storage.open_streams == 0


async def test_an_isolated_far_read_leaves_the_stream_alone() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        out = bytearray()
        while len(out) < len(CONTENT):
            if len(out) == 20 * BLOCK:  # a page-cache miss far behind the reader
                far = 2 * BLOCK + 300
                assert await reader.read(handle, far, READ) == CONTENT[far : far + READ]
            if len(out) == 30 * BLOCK:  # ... and one far ahead of it
                far = 60 * BLOCK
                assert await reader.read(handle, far, READ) == CONTENT[far : far + READ]
            out += await reader.read(handle, len(out), READ)
        assert bytes(out) == CONTENT
        await reader.release(handle)
        assert reader.statistics().streams_started == 1
    assert storage.bytes_sent <= len(CONTENT) + BLOCK + READ  # the far reads


async def test_a_new_sequential_run_elsewhere_replaces_the_stream() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        for base in (0, 40 * BLOCK):
            for off in range(base, base + 6 * BLOCK, READ):
                assert await reader.read(handle, off, READ) == CONTENT[off : off + READ]
        await reader.release(handle)
        stats = reader.statistics()
        assert stats.streams_started == 2
        assert (stats.readahead_bytes, stats.cache.in_flight, storage.open_streams) == (0, 0, 0)

"""Reader: block arithmetic, bounded GETs, de-duplication, errors and deadlines.

Against ``FakeStorage`` (tests/reader_util.py), no server. Read-ahead streams are
``test_readahead.py``, verification ``test_verify.py`` and ``test_reader_integrity.py``,
the real client and devserver ``tests/server/test_reader.py``.
"""

from __future__ import annotations

import ctypes
import random

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
    make_settings,
)

from simvuefs.config import MIB
from simvuefs.errors import DeadlineExceeded, NotFound
from simvuefs.models import Artifact
from simvuefs.read.reader import (
    FAILED_READ_HOLD,
    Reader,
    ReadHandle,
    keep_freed_blocks,
    open_reader,
)


async def test_reads_straddling_blocks_and_the_end() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    size = len(CONTENT)
    cases = [(0, 1), (BLOCK - 1, 2), (BLOCK - 10, 3 * BLOCK), (5, BLOCK), (size - 10, 100)]
    cases += [(size - 1, 1), (size, 10), (size + 5000, 10), (3 * BLOCK, 0)]
    rng = random.Random(7)
    cases += [(rng.randrange(size), rng.randrange(1, 3 * BLOCK)) for _ in range(300)]
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, size)
        for off, length in cases:
            assert await reader.read(handle, off, length) == CONTENT[off : off + length]
        await reader.release(handle)


async def test_empty_artifact_reads_nothing() -> None:
    empty = make_artifact("empty", b"")
    storage = FakeStorage((empty, b""))
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(empty, 0)
        assert await reader.read(handle, 0, 4096) == b""
        assert await reader.read(handle, 100, 4096) == b""
        await reader.release(handle)
    assert storage.range_gets == storage.streams == 0


async def test_scattered_reads_fetch_exactly_their_bytes_and_never_stream() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    offsets = [40 * BLOCK + 5, 3 * BLOCK, 60 * BLOCK + 100, 20 * BLOCK, 10 * BLOCK + 7]
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        for off in offsets:
            assert await reader.read(handle, off, READ) == CONTENT[off : off + READ]
        await reader.release(handle)
        stats = reader.statistics()
        assert stats.streams_started == 0
        assert stats.cache.entries == 0  # the kernel's page cache keeps what it asked for
        assert stats.exact_requests == len(offsets)
    assert (storage.range_gets, storage.streams) == (len(offsets), 0)
    assert storage.bytes_sent == len(offsets) * READ


async def test_a_read_that_times_out_leaves_nothing_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    storage.range_gate = trio.Event()
    async with open_reader(storage, make_settings(request_timeout=3.0)) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        with pytest.raises(DeadlineExceeded):
            await reader.read(handle, BLOCK, 2000)  # needs more than the first piece
        assert reader.statistics().cache.in_flight == 0
        storage.range_gate.set()
        await trio.sleep(FAILED_READ_HOLD)  # until then the handle fails it at once
        assert await reader.read(handle, BLOCK, 2000) == CONTENT[BLOCK : BLOCK + 2000]
        await reader.release(handle)
    assert storage.range_gets == 2


async def test_concurrent_readers_of_one_streamed_block_cause_one_fetch() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    results: list[bytes] = []
    async with open_reader(storage, make_settings()) as reader:
        first = reader.open(ARTIFACT, len(CONTENT))
        storage.gate = trio.Event()
        async with trio.open_nursery() as nursery:
            # The first handle reads blocks 0-2 in order: its stream claims blocks 2-3.
            nursery.start_soon(read_through_blocks, reader, first, 3)
            await trio.testing.wait_all_tasks_blocked()
            storage.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        sent = storage.bytes_sent

        async def read_one(off: int) -> None:
            handle = reader.open(ARTIFACT, len(CONTENT))
            results.append(await reader.read(handle, off, 100))
            await reader.release(handle)

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(read_one, 3 * BLOCK + 100 * i)
        await reader.release(first)
    assert sorted(results) == sorted(CONTENT[3 * BLOCK + 100 * i :][:100] for i in range(16))
    assert storage.bytes_sent == sent  # the stream had claimed block 3 already


async def read_through_blocks(reader: Reader, handle: ReadHandle, count: int) -> None:
    for index in range(count):
        data = await reader.read(handle, index * BLOCK, BLOCK)
        assert data == CONTENT[index * BLOCK : (index + 1) * BLOCK]


async def test_artifacts_with_equal_checksums_share_blocks() -> None:
    twin = Artifact(id="id-twin", name="twin.bin", size=len(CONTENT), checksum=ARTIFACT.checksum)
    storage = FakeStorage((ARTIFACT, CONTENT), (twin, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        first = reader.open(ARTIFACT, len(CONTENT))
        await read_through_blocks(reader, first, 3)
        await trio.testing.wait_all_tasks_blocked()
        sent = storage.bytes_sent
        second = reader.open(twin, len(CONTENT))
        assert await reader.read(second, 3 * BLOCK, BLOCK) == CONTENT[3 * BLOCK : 4 * BLOCK]
        await reader.release(first)
        await reader.release(second)
    assert storage.bytes_sent == sent  # the first handle's stream had fetched block 3


async def test_errors_propagate_and_are_not_cached() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    storage.error = NotFound("no such artifact", status=404)
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        with pytest.raises(NotFound):
            await reader.read(handle, 0, READ)
        storage.error = None
        assert await reader.read(handle, 0, READ) == CONTENT[:READ]
        await reader.release(handle)
    assert storage.range_gets == 2


async def test_a_stalled_fetch_ends_in_deadline_exceeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    storage.gate = trio.Event()
    async with open_reader(storage, make_settings(request_timeout=7.0)) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        start = trio.current_time()
        with pytest.raises(DeadlineExceeded):
            await reader.read(handle, 0, READ)
        assert trio.current_time() - start == pytest.approx(7.0)
        assert reader.statistics().cache.in_flight == 0
        storage.gate.set()
        await trio.sleep(FAILED_READ_HOLD)  # until then the handle fails it at once
        assert await reader.read(handle, 0, READ) == CONTENT[:READ]
        await reader.release(handle)


# glibc's mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


class FakeLibc:
    """A C library whose ``mallopt`` records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.mark.parametrize("block_size", [BLOCK, MIB, 8 * MIB])
def test_freed_blocks_stay_on_the_heap(monkeypatch: pytest.MonkeyPatch, block_size: int) -> None:
    # What this buys (no page faults for each new block) is a speed claim: scripts/bench
    # measures it. Here: fixed mmap and trim thresholds above the block size, so that glibc
    # neither mmaps block-sized buffers nor trims them off the heap when they are freed.
    libc = FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    keep_freed_blocks(block_size)
    thresholds = dict(libc.calls)
    assert thresholds.keys() == {M_MMAP_THRESHOLD, M_TRIM_THRESHOLD}
    assert thresholds[M_MMAP_THRESHOLD] > block_size
    assert thresholds[M_TRIM_THRESHOLD] > block_size


def test_without_mallopt_the_allocator_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str | None] = []

    def no_mallopt(name: str | None) -> object:
        opened.append(name)
        return object()

    monkeypatch.setattr(ctypes, "CDLL", no_mallopt)
    keep_freed_blocks(BLOCK)  # no AttributeError where the C library has no mallopt
    assert opened == [None]  # the C library was consulted, and nothing else happened


class RealLibc:
    """The process's C library, whose ``mallopt`` answers are recorded (1: accepted)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library
        self.answers: list[tuple[int, int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        answer: int = self.library.mallopt(param, value)
        self.answers.append((param, value, answer))
        return answer


def test_the_real_allocator_can_be_tuned_repeatedly(monkeypatch: pytest.MonkeyPatch) -> None:
    library = ctypes.CDLL(None)
    if getattr(library, "mallopt", None) is None:
        pytest.skip("this C library has no mallopt")
    libc = RealLibc(library)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    keep_freed_blocks(BLOCK)
    keep_freed_blocks(2 * BLOCK)
    assert [param for param, _, _ in libc.answers] == [M_MMAP_THRESHOLD, M_TRIM_THRESHOLD] * 2
    assert all(answer == 1 for _, _, answer in libc.answers), libc.answers
    assert libc.answers[2][1] >= libc.answers[0][1] > BLOCK

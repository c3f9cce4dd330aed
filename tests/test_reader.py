"""Reader: block math, sequential streaming, bounded random reads, de-duplication, memory caps.

The first part drives the reader with ``FakeStorage``, a duck-typed stand-in for the client's
download half over in-memory bytes (small blocks keep the arithmetic visible). The second
part uses the real client against the real devserver.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.lowlevel
import trio.testing

from simvuefs.config import Settings
from simvuefs.errors import DeadlineExceeded, NotFound, TransportError
from simvuefs.models import Artifact
from simvuefs.reader import Reader, ReadHandle, open_reader

BLOCK = 4096
READ = 1024  # the "kernel read size" of these tests: a quarter block


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "url": "http://127.0.0.1:1/api",
        "token": "unused",
        "block_size": BLOCK,
        "cache_bytes": 256 * BLOCK,
        "readahead_per_file": 8 * BLOCK,
        "readahead_total": 32 * BLOCK,
        "request_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_content(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def make_artifact(name: str, content: bytes) -> Artifact:
    return Artifact(
        id=f"id-{name}", name=name, size=len(content), checksum=hashlib.sha256(content).hexdigest()
    )


class FakeBody:
    def __init__(self, storage: FakeStorage, data: bytes) -> None:
        self.storage = storage
        self.data = data
        self.pos = 0

    async def receive(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        fail_at = self.storage.stream_fail_at
        if fail_at is not None and self.pos >= fail_at:
            self.storage.stream_fail_at = None
            raise TransportError("connection reset by fake storage")
        chunk = self.data[self.pos : self.pos + min(max_bytes, self.storage.chunk)]
        self.pos += len(chunk)
        self.storage.bytes_sent += len(chunk)
        return chunk


class FakeStorage:
    """In-memory artifacts served through ``read_range`` and ``open_range``, with counters.

    *gate*, when not None, holds every request until it is set; *error* is raised by every
    request while set; *stream_fail_at* makes the next stream fail after that many bytes.
    """

    def __init__(self, *artifacts: tuple[Artifact, bytes], chunk: int = 1000) -> None:
        self.contents = {artifact.id: content for artifact, content in artifacts}
        self.chunk = chunk
        self.range_gets = 0
        self.streams = 0
        self.open_streams = 0
        self.bytes_sent = 0
        self.gate: trio.Event | None = None
        self.error: Exception | None = None
        self.stream_fail_at: int | None = None

    async def _admit(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error

    async def read_range(self, artifact: Artifact, start: int, length: int) -> bytes:
        self.range_gets += 1
        await self._admit()
        data = self.contents[artifact.id][start : start + length]
        self.bytes_sent += len(data)
        return data

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[FakeBody]:
        self.streams += 1
        await self._admit()
        self.open_streams += 1
        try:
            yield FakeBody(self, self.contents[artifact.id][start:end])
        finally:
            self.open_streams -= 1


async def read_through(reader: Reader, handle: ReadHandle, chunk: int = READ) -> bytes:
    out = bytearray()
    while True:
        data = await reader.read(handle, len(out), chunk)
        if not data:
            return bytes(out)
        assert len(data) == chunk or len(out) + len(data) == handle.size
        out += data


CONTENT = make_content(64 * BLOCK + 123)
ARTIFACT = make_artifact("big.bin", CONTENT)


async def test_sequential_read_is_one_range_and_one_stream() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_through(reader, handle) == CONTENT
        await reader.release(handle)
        stats = reader.statistics()
    # block 0 with a bounded GET, then one stream once a whole block was read in order
    assert (storage.range_gets, storage.streams) == (1, 1)
    assert storage.bytes_sent == len(CONTENT)
    assert stats.streams_started == 1
    assert stats.range_bytes + stats.stream_bytes == len(CONTENT)
    assert 0 < stats.readahead_peak_per_handle <= 8 * BLOCK
    assert stats.readahead_bytes == 0
    assert stats.open_handles == 0
    # streamed blocks were dropped behind the reader: the cache held about a window (8 ahead,
    # 2 behind, block 0), and keeps only block 0, fetched with a bounded GET, after release
    assert stats.cache.peak_bytes <= 12 * BLOCK
    assert stats.cache.bytes == BLOCK


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


async def test_scattered_reads_fetch_single_blocks_and_never_stream() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    offsets = [40 * BLOCK + 5, 3 * BLOCK, 60 * BLOCK + 100, 20 * BLOCK, 10 * BLOCK + 7]
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        for off in offsets:
            assert await reader.read(handle, off, READ) == CONTENT[off : off + READ]
        await reader.release(handle)
        assert reader.statistics().streams_started == 0
    assert (storage.range_gets, storage.streams) == (len(offsets), 0)
    assert storage.bytes_sent == len(offsets) * BLOCK


async def test_concurrent_readers_of_one_block_cause_one_fetch() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    storage.gate = trio.Event()
    results: list[bytes] = []
    async with open_reader(storage, make_settings()) as reader:

        async def read_one(off: int) -> None:
            handle = reader.open(ARTIFACT, len(CONTENT))
            results.append(await reader.read(handle, off, 100))
            await reader.release(handle)

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(read_one, 5 * BLOCK + 100 * i)
            await trio.testing.wait_all_tasks_blocked()
            storage.gate.set()
        assert reader.statistics().cache.joins == 15
    assert sorted(results) == sorted(CONTENT[5 * BLOCK + 100 * i :][:100] for i in range(16))
    assert storage.range_gets == 1


async def test_artifacts_with_equal_checksums_share_blocks() -> None:
    twin = Artifact(id="id-twin", name="twin.bin", size=len(CONTENT), checksum=ARTIFACT.checksum)
    storage = FakeStorage((ARTIFACT, CONTENT), (twin, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        first = reader.open(ARTIFACT, len(CONTENT))
        assert await reader.read(first, 0, 3 * BLOCK) == CONTENT[: 3 * BLOCK]
        second = reader.open(twin, len(CONTENT))
        assert await reader.read(second, BLOCK, BLOCK) == CONTENT[BLOCK : 2 * BLOCK]
        await reader.release(first)
        await reader.release(second)
    assert storage.range_gets == 1


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
    assert stats.cache.peak_bytes <= 40 * BLOCK
    assert (stats.readahead_bytes, stats.cache.in_flight, storage.open_streams) == (0, 0, 0)


async def test_readahead_total_is_capped_at_half_the_cache() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    settings = make_settings(
        cache_bytes=8 * BLOCK, readahead_per_file=64 * BLOCK, readahead_total=64 * BLOCK
    )
    async with open_reader(storage, settings) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_through(reader, handle) == CONTENT
        await reader.release(handle)
        stats = reader.statistics()
    assert 0 < stats.readahead_peak <= 4 * BLOCK
    assert stats.cache.peak_bytes <= 8 * BLOCK
    assert storage.bytes_sent == len(CONTENT)


async def test_stream_stays_within_its_window_and_stops_on_release() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        for off in range(0, 6 * BLOCK, READ):
            await reader.read(handle, off, READ)
        await trio.testing.wait_all_tasks_blocked()
        # the reader is in block 5; the stream may be at most the window (8 blocks) ahead
        assert storage.bytes_sent <= (5 + 1 + 8) * BLOCK
        assert storage.open_streams == 1
        await reader.release(handle)
        assert storage.open_streams == 0
        stats = reader.statistics()
        assert (stats.readahead_bytes, stats.cache.in_flight) == (0, 0)


async def test_closing_the_reader_stops_streams_of_open_handles() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        for off in range(0, 3 * BLOCK, READ):
            await reader.read(handle, off, READ)
        await trio.testing.wait_all_tasks_blocked()
        assert storage.open_streams == 1
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
    assert storage.streams == 1


async def test_a_new_sequential_run_elsewhere_replaces_the_stream() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        for base in (0, 40 * BLOCK):
            for off in range(base, base + 6 * BLOCK, READ):
                assert await reader.read(handle, off, READ) == CONTENT[off : off + READ]
        await trio.testing.wait_all_tasks_blocked()
        assert storage.open_streams == 1
        await reader.release(handle)
        assert reader.statistics().streams_started == 2


async def test_a_broken_stream_is_recovered_from() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    storage.stream_fail_at = 10 * BLOCK + 500
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_through(reader, handle) == CONTENT
        await reader.release(handle)
    assert storage.streams == 2


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
        assert await reader.read(handle, 0, READ) == CONTENT[:READ]
        await reader.release(handle)

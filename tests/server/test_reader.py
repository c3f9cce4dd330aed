"""Reader: block math, sequential streaming, bounded random reads, de-duplication, memory caps.

The first part drives the reader with ``FakeStorage``, a duck-typed stand-in for the client's
download half over in-memory bytes (small blocks keep the arithmetic visible). The second
part uses the real client against the real devserver.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
from devserver_util import SEEDED_LARGE_SIZE, DevServer

from simvuefs.backends.client import SimvueClient
from simvuefs.config import MIB, Settings
from simvuefs.devserver.seed import ARTIFACTS, large_content
from simvuefs.devserver.store import Store
from simvuefs.errors import DeadlineExceeded, NotFound, TransportError
from simvuefs.models import Artifact
from simvuefs.read import reader as reader_module
from simvuefs.read.reader import Reader, ReadHandle, keep_freed_blocks, open_reader

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

    *gate*, when not None, holds every request until it is set; *range_gate* holds bounded
    GETs after their first piece; *error* is raised by every
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
        self.range_gate: trio.Event | None = None

    async def _admit(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes:
        self.range_gets += 1
        await self._admit()
        data = self.contents[artifact.id][start : start + length]
        for at in range(0, len(data), self.chunk):  # arrives in pieces, like a real body
            if self.range_gate is not None and at > 0:
                await self.range_gate.wait()
            await trio.lowlevel.checkpoint()
            if on_chunk is not None:
                on_chunk(data[at : at + self.chunk])
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
    # 2 behind, block 0), and keeps nothing after release (block 0, fetched with a bounded
    # GET before the run was known to be sequential, went with the streamed ones)
    assert stats.cache.peak_bytes <= 12 * BLOCK
    assert stats.cache.bytes == 0


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
        await trio.testing.wait_all_tasks_blocked()  # the last block's rest arrives
        await reader.release(handle)
        assert reader.statistics().streams_started == 0
        assert reader.statistics().cache.entries == len(offsets)
    assert (storage.range_gets, storage.streams) == (len(offsets), 0)
    assert storage.bytes_sent == len(offsets) * BLOCK


async def test_a_small_first_read_returns_before_the_rest_of_its_block() -> None:
    storage = FakeStorage((ARTIFACT, CONTENT))
    storage.range_gate = trio.Event()  # bounded GETs stall after their first 1000 bytes
    async with open_reader(storage, make_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        off = 5 * BLOCK + 10
        with trio.fail_after(5):  # not waiting for the gate
            assert await reader.read(handle, off, 100) == CONTENT[off : off + 100]
        assert reader.statistics().cache.in_flight == 1  # the block is still arriving
        other = reader.open(ARTIFACT, len(CONTENT))
        async with trio.open_nursery() as nursery:
            results: list[bytes] = []

            async def read_later_in_the_block() -> None:
                results.append(await reader.read(other, off + 2000, 1000))

            nursery.start_soon(read_later_in_the_block)
            await trio.testing.wait_all_tasks_blocked()
            assert not results  # it waits for the flight, it does not fetch again
            storage.range_gate.set()
        assert results == [CONTENT[off + 2000 : off + 3000]]
        stats = reader.statistics()
        assert (stats.cache.in_flight, stats.cache.entries, stats.cache.joins) == (0, 1, 1)
        await reader.release(handle)
        await reader.release(other)
    assert storage.range_gets == 1


async def test_an_early_read_that_times_out_abandons_its_block_at_once(
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
        assert await reader.read(handle, BLOCK, 2000) == CONTENT[BLOCK : BLOCK + 2000]
        await reader.release(handle)
    assert storage.range_gets == 2


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


async def test_concurrent_verified_readers_keep_the_hash_backlog_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the total cap, each of the 16 handles would queue up to HASH_BATCH.
    monkeypatch.setattr(reader_module, "HASH_BATCH", 32 * BLOCK)
    monkeypatch.setattr(reader_module, "HASH_BACKLOG_TOTAL", 8 * BLOCK)
    contents = [make_content(48 * BLOCK + i, seed=i) for i in range(16)]
    artifacts = [make_artifact(f"v{i}", c) for i, c in enumerate(contents)]
    storage = FakeStorage(*zip(artifacts, contents, strict=True), chunk=4 * BLOCK)
    async with open_reader(storage, make_settings(readahead_total=64 * BLOCK)) as reader:

        async def read_whole(i: int) -> None:
            handle = reader.open(artifacts[i], len(contents[i]))
            assert await read_through(reader, handle, BLOCK) == contents[i]
            await reader.release(handle)

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(read_whole, i)
        stats = reader.statistics()
    assert (stats.verified, stats.verify_failures) == (16, 0)
    assert stats.hashed_bytes == sum(len(c) for c in contents)
    assert stats.hash_backlog_peak <= 8 * BLOCK + 16 * BLOCK  # the cap, one read per handle


async def test_blocks_a_finished_stream_delivered_stay_charged_until_read() -> None:
    content = make_content(12 * BLOCK)
    artifact = make_artifact("twelve.bin", content)
    storage = FakeStorage((artifact, content), chunk=BLOCK)
    settings = make_settings(readahead_per_file=8 * BLOCK, readahead_total=8 * BLOCK)
    async with open_reader(storage, settings) as reader:
        handle = reader.open(artifact, len(content))
        for index in range(5):  # the window grows to 8 blocks: the stream reaches the end
            assert (
                await reader.read(handle, index * BLOCK, BLOCK) == content[index * BLOCK :][:BLOCK]
            )
        await trio.testing.wait_all_tasks_blocked()
        assert storage.open_streams == 0
        # Blocks 5-11 wait in the cache for their reader: still read-ahead, so other files'
        # streams cannot take the budget (and fill the cache) meanwhile.
        assert reader.statistics().readahead_bytes == 7 * BLOCK
        for index in range(5, 12):
            assert (
                await reader.read(handle, index * BLOCK, BLOCK) == content[index * BLOCK :][:BLOCK]
            )
        assert reader.statistics().readahead_bytes == 0
        await reader.release(handle)
        stats = reader.statistics()
    assert (storage.range_gets, storage.streams) == (1, 1)
    assert stats.readahead_peak <= 8 * BLOCK


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


CHURN_BLOCKS = """
import resource, sys
from collections import deque
from simvuefs.read.reader import keep_freed_blocks
if sys.argv[1] == "tuned":
    keep_freed_blocks(1 << 20)
def churn(count):  # what a stream does: new 1 MiB blocks, the oldest dropped
    window = deque()
    for i in range(count):
        window.append(bytes([i % 256]) * (1 << 20))
        if len(window) > 32:
            window.popleft()
churn(64)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(256)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 256)
"""


def page_faults_per_block(mode: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", CHURN_BLOCKS, mode], capture_output=True, text=True, check=True
    )
    return float(result.stdout)


def test_freed_blocks_are_reused_without_page_faults() -> None:
    keep_freed_blocks(BLOCK)  # callable any number of times
    default, tuned = page_faults_per_block("default"), page_faults_per_block("tuned")
    assert tuned < 4 < default


# -- the real client against the real devserver ----------------------------------------------

LARGE_SIZE = SEEDED_LARGE_SIZE
KIB128 = 128 * 1024


@asynccontextmanager
async def real_reader(server: DevServer, **tunables: object) -> AsyncIterator[Reader]:
    settings = Settings(url=server.api_url, token=server.token, **tunables)  # type: ignore[arg-type]
    async with SimvueClient.open(settings) as client, open_reader(client, settings) as reader:
        yield reader


async def seeded_files(server: DevServer) -> list[Artifact]:
    """Every seeded artifact that is a file (object artifacts' sizes are not content sizes)."""
    settings = Settings(url=server.api_url, token=server.token)
    async with SimvueClient.open(settings) as client:
        found = {
            a.id: a for run in await client.list_runs() for a in await client.list_artifacts(run.id)
        }
    return [a for a in found.values() if not a.is_object]


async def seeded_large(server: DevServer) -> Artifact:
    (large,) = [a for a in await seeded_files(server) if a.name == ARTIFACTS["large"].name]
    assert large.size == LARGE_SIZE
    return large


async def sha256_of_read(reader: Reader, artifact: Artifact, chunk: int) -> str:
    digest = hashlib.sha256()
    handle = reader.open(artifact, artifact.size)
    offset = 0
    while data := await reader.read(handle, offset, chunk):
        digest.update(data)
        offset += len(data)
    await reader.release(handle)
    assert offset == artifact.size
    return digest.hexdigest()


async def test_real_sequential_read_is_two_storage_gets(seeded_devserver: DevServer) -> None:
    large = await seeded_large(seeded_devserver)
    seeded_devserver.reset_stats()
    async with real_reader(seeded_devserver) as reader:
        assert await sha256_of_read(reader, large, KIB128) == large.checksum
        stats = reader.statistics()
    served = seeded_devserver.stats()
    assert served["storage_gets"] == 2  # block 0, then one stream for the rest
    assert served["bytes_served"] == LARGE_SIZE
    assert stats.readahead_peak_per_handle <= 32 * MIB
    assert stats.cache.peak_bytes <= 48 * MIB


async def test_real_head_and_dd_skip_transfer_at_most_two_blocks(
    seeded_devserver: DevServer,
) -> None:
    large = await seeded_large(seeded_devserver)
    places = [0, LARGE_SIZE // 2, LARGE_SIZE // 2 + MIB - 2048, LARGE_SIZE - 4096]
    for offset in places:
        seeded_devserver.reset_stats()
        async with real_reader(seeded_devserver) as reader:
            handle = reader.open(large, LARGE_SIZE)
            assert await reader.read(handle, offset, 4096) == large_content(offset, 4096)
            await reader.release(handle)
        served = seeded_devserver.stats()
        assert served["storage_gets"] == 1
        assert served["bytes_served"] <= 2 * MIB


async def test_real_small_reads_far_into_a_huge_artifact(tmp_path: Path) -> None:
    size = 3 * 1024 * MIB  # a sparse blob: only the marked ranges hold data
    offsets = [1024 * MIB + 12345, 1536 * MIB - 100, size - 4096]
    markers = {offset: random.Random(offset).randbytes(4096) for offset in offsets}
    data_dir = tmp_path / "data"
    store = Store(data_dir)
    checksum = hashlib.sha256(b"sparse test blob").hexdigest()  # a key; never verified here
    with store.blob_path(checksum).open("wb") as blob:
        blob.truncate(size)
        for offset, marker in markers.items():
            blob.seek(offset)
            blob.write(marker)
    record = store.create_artifact(
        {
            "name": "huge.bin",
            "original_path": "/data/huge.bin",
            "size": size,
            "checksum": checksum,
            "mime_type": "application/octet-stream",
            "created": "2025-03-14T09:00:00.000000",
            "uploaded": True,
        }
    )
    store.close()
    server = DevServer(tmp_path / "server", data_dir=data_dir).start()
    try:
        settings = Settings(url=server.api_url, token=server.token)
        async with SimvueClient.open(settings) as client:
            huge = await client.get_artifact(record["id"])
        async with real_reader(server) as reader:
            for offset, marker in markers.items():
                server.reset_stats()
                handle = reader.open(huge, size)
                assert await reader.read(handle, offset, 4096) == marker
                await reader.release(handle)
                assert server.stats()["bytes_served"] <= 2 * MIB
    finally:
        server.stop()


async def test_real_random_reads_fetch_bounded_ranges(seeded_devserver: DevServer) -> None:
    large = await seeded_large(seeded_devserver)
    rng = random.Random(3)
    blocks = rng.sample(range(LARGE_SIZE // MIB), 30)
    seeded_devserver.reset_stats()
    async with real_reader(seeded_devserver) as reader:
        handle = reader.open(large, LARGE_SIZE)
        for index in blocks:
            length = rng.choice([4096, 256 * 1024])
            offset = index * MIB + rng.randrange(MIB - length)  # within one block
            assert await reader.read(handle, offset, length) == large_content(offset, length)
        await reader.release(handle)
        assert reader.statistics().streams_started == 0
    served = seeded_devserver.stats()
    assert served["storage_gets"] == len(blocks)
    assert served["bytes_served"] == MIB * len(blocks)


async def test_real_concurrent_readers_of_one_block_fetch_it_once(
    seeded_devserver: DevServer,
) -> None:
    large = await seeded_large(seeded_devserver)
    seeded_devserver.reset_stats()
    offsets = [7 * MIB + 4096 * i for i in range(16)]
    async with real_reader(seeded_devserver) as reader:
        results: dict[int, bytes] = {}

        async def read_one(offset: int) -> None:
            handle = reader.open(large, LARGE_SIZE)
            results[offset] = await reader.read(handle, offset, 4096)
            await reader.release(handle)

        async with trio.open_nursery() as nursery:
            for offset in offsets:
                nursery.start_soon(read_one, offset)
    assert results == {offset: large_content(offset, 4096) for offset in offsets}
    assert seeded_devserver.stats()["storage_gets"] == 1


async def test_real_sixteen_concurrent_readers_within_memory_caps(
    seeded_devserver: DevServer,
) -> None:
    files = await seeded_files(seeded_devserver)
    large = await seeded_large(seeded_devserver)
    small = [a for a in files if a.size < MIB]
    targets = [large] * 6 + (small * 10)[:10]
    caps = {"cache_bytes": 24 * MIB, "readahead_per_file": 4 * MIB, "readahead_total": 8 * MIB}
    async with real_reader(seeded_devserver, **caps) as reader:
        digests: list[tuple[str, str]] = []

        async def read_whole(index: int, artifact: Artifact) -> None:
            digest = await sha256_of_read(reader, artifact, KIB128 + 4096 * index)
            digests.append((digest, artifact.checksum))

        async with trio.open_nursery() as nursery:
            for index, artifact in enumerate(targets):
                nursery.start_soon(read_whole, index, artifact)
        stats = reader.statistics()
    assert len(digests) == 16
    assert all(digest == checksum for digest, checksum in digests)
    assert stats.readahead_peak <= 8 * MIB
    assert stats.readahead_peak_per_handle <= 4 * MIB
    assert stats.cache.peak_bytes <= 24 * MIB
    assert (stats.readahead_bytes, stats.cache.in_flight, stats.open_handles) == (0, 0, 0)


async def test_real_storage_ignoring_range_still_gives_the_right_bytes(
    seeded_devserver: DevServer,
) -> None:
    large = await seeded_large(seeded_devserver)
    seeded_devserver.set_faults(ignore_range=True)
    async with real_reader(seeded_devserver) as reader:
        assert await sha256_of_read(reader, large, KIB128) == large.checksum
        handle = reader.open(large, LARGE_SIZE)
        for offset in (5 * MIB + 77, 40 * MIB - 10, LARGE_SIZE - 1000):
            expected = large_content(offset, min(4096, LARGE_SIZE - offset))
            assert await reader.read(handle, offset, 4096) == expected
        await reader.release(handle)


async def test_real_expired_download_url_is_refreshed(seeded_devserver: DevServer) -> None:
    seeded_devserver.set_faults(url_expiry=-60)  # URLs minted now are already expired
    large = await seeded_large(seeded_devserver)
    seeded_devserver.clear_faults()
    async with real_reader(seeded_devserver) as reader:
        handle = reader.open(large, LARGE_SIZE)
        assert await reader.read(handle, 3 * MIB, 4096) == large_content(3 * MIB, 4096)
        await reader.release(handle)


async def test_real_stream_is_held_back_by_the_window(seeded_devserver: DevServer) -> None:
    large = await seeded_large(seeded_devserver)
    seeded_devserver.reset_stats()
    async with real_reader(seeded_devserver, readahead_per_file=4 * MIB) as reader:
        handle = reader.open(large, LARGE_SIZE)
        for offset in range(0, 8 * MIB, KIB128):
            assert await reader.read(handle, offset, KIB128) == large_content(offset, KIB128)
        await trio.sleep(0.5)  # time for the stream to run ahead if it could
        stats = reader.statistics()
        await reader.release(handle)
    # the stream started at block 1 and may be a 4 MiB window past block 7
    assert stats.stream_bytes <= (8 - 1 + 4) * MIB
    # the server sent more into socket buffers (autotuned up to net.ipv4.tcp_rmem's maximum),
    # but TCP flow control stopped it before the end
    assert seeded_devserver.stats()["bytes_served"] < LARGE_SIZE


async def test_real_connection_drops_are_survived(seeded_devserver: DevServer) -> None:
    large = await seeded_large(seeded_devserver)
    seeded_devserver.set_faults(drop_after_bytes=5 * MIB + 1234)
    seeded_devserver.reset_stats()
    async with real_reader(seeded_devserver) as reader:
        assert await sha256_of_read(reader, large, KIB128) == large.checksum
        stats = reader.statistics()
    # every storage answer broke after 5 MiB; streams were restarted where they broke
    assert stats.streams_started >= 10
    assert seeded_devserver.stats()["bytes_served"] < 2 * LARGE_SIZE


async def test_real_stalled_storage_ends_in_deadline_exceeded(
    seeded_devserver: DevServer,
) -> None:
    large = await seeded_large(seeded_devserver)
    seeded_devserver.set_faults(stall_seconds=2.5, stall_where="storage_before")
    async with real_reader(seeded_devserver, request_timeout=1.0) as reader:
        handle = reader.open(large, LARGE_SIZE)
        start = trio.current_time()
        with pytest.raises(DeadlineExceeded):
            await reader.read(handle, 0, 4096)
        assert trio.current_time() - start < 2
        await reader.release(handle)

"""Reader: the real client against the real devserver.

Storage requests and bytes served, as the devserver counts them, for sequential, random,
concurrent and far reads; storage faults (Range ignored, expired URLs, dropped connections,
stalls); the memory caps. The reader's logic against a fake storage is in tests/unit
(test_reader_blocks, test_readahead, test_verify, test_reader_integrity).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from devserver_util import SEEDED_LARGE_SIZE
from helpers import settings_for, sha256

from simvuefs.backends.client import SimvueClient
from simvuefs.config import MIB
from simvuefs.devserver.seed import ARTIFACTS, large_content
from simvuefs.devserver.store import Store
from simvuefs.errors import DeadlineExceeded
from simvuefs.models import Artifact
from simvuefs.read.reader import Reader, open_reader
from testbed.devserver import DevServer

LARGE_SIZE = SEEDED_LARGE_SIZE
KIB128 = 128 * 1024


@asynccontextmanager
async def real_reader(server: DevServer, **tunables: Any) -> AsyncIterator[Reader]:
    settings = settings_for(server, **tunables)
    async with SimvueClient.open(settings) as client, open_reader(client, settings) as reader:
        yield reader


async def seeded_files(server: DevServer) -> list[Artifact]:
    """Every seeded artifact that is a file (object artifacts' sizes are not content sizes)."""
    async with SimvueClient.open(settings_for(server)) as client:
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


async def test_real_sequential_read_is_parts_in_flight_each_fetched_once(
    seeded_devserver: DevServer,
) -> None:
    large = await seeded_large(seeded_devserver)
    seeded_devserver.reset_stats()
    # A round trip of 50 ms before each storage answer makes a 2 MiB part arrive slower
    # than 100 MiB/s however fast the machine: the link a reader fetches several parts of
    # at once (on loopback at full speed one connection is enough, and the reader keeps one).
    seeded_devserver.set_faults(request_delay=0.05)
    try:
        async with real_reader(seeded_devserver, read_part_size=2 * MIB) as reader:
            assert await sha256_of_read(reader, large, KIB128) == large.checksum
            stats = reader.statistics()
    finally:
        seeded_devserver.clear_faults()
    served = seeded_devserver.stats()
    # blocks 0-1 read by read (exactly), then the parts, several at once, on connections
    # of their own
    assert stats.exact_requests == 2 * MIB // KIB128
    assert served["storage_gets"] == stats.range_requests + stats.parts_started
    assert stats.parts_in_flight_peak > 1
    assert served["bytes_served"] == LARGE_SIZE
    assert stats.readahead_peak_per_handle <= 64 * MIB
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
    checksum = sha256(b"sparse test blob")  # a key; never verified here
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
        async with SimvueClient.open(settings_for(server)) as client:
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
        asked = 0
        for index in blocks:
            length = rng.choice([4096, 256 * 1024])
            asked += length
            offset = index * MIB + rng.randrange(MIB - length)  # within one block
            assert await reader.read(handle, offset, length) == large_content(offset, length)
        await reader.release(handle)
        assert reader.statistics().streams_started == 0
    served = seeded_devserver.stats()
    assert served["storage_gets"] == len(blocks)
    assert served["bytes_served"] == asked  # exactly what was read


async def test_real_concurrent_random_readers_of_one_block_move_only_their_bytes(
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
    assert seeded_devserver.stats()["bytes_served"] == 4096 * len(offsets)


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
    seeded_devserver.set_faults(drop_after_bytes=MIB + 1234)  # every part of 2+ blocks breaks
    seeded_devserver.reset_stats()
    async with real_reader(seeded_devserver) as reader:
        assert await sha256_of_read(reader, large, KIB128) == large.checksum
        stats = reader.statistics()
    # every storage answer broke after a block; parts were resumed where they broke
    assert stats.parts_resumed >= 1
    assert seeded_devserver.stats()["bytes_served"] < 2 * LARGE_SIZE


async def test_real_stalled_storage_ends_in_deadline_exceeded(
    seeded_devserver: DevServer,
) -> None:
    large = await seeded_large(seeded_devserver)
    seeded_devserver.set_faults(stall_seconds=2.5, stall_where="storage_before")
    async with real_reader(seeded_devserver, request_timeout=1.0) as reader:
        handle = reader.open(large, LARGE_SIZE)
        with pytest.raises(DeadlineExceeded):  # the stall would end in a good answer
            await reader.read(handle, 0, 4096)
        await reader.release(handle)

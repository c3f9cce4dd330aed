"""The reader's checksum verification against a fake storage that may serve wrong bytes.

No server and no mount: :class:`TamperedStorage` answers the reader's range requests from
bytes that may differ from what the artifact's checksum describes. A read in order from start
to end is verified off the read path; a mismatch fails the last read and every later one, and
drops the cached blocks; reads completing out of order are still verified; partial or jumpy
reads and artifacts without a checksum are not. What a mount does with corrupted storage is
``tests/mount/test_faults.py``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
from helpers import settings_for, sha256

from simvuefs.config import Settings
from simvuefs.errors import IntegrityError
from simvuefs.models import Artifact
from simvuefs.read import verify
from simvuefs.read.reader import Reader, ReadHandle, open_reader

BLOCK = 4096


class TamperedStorage:
    """Serves the reader's range requests from *served*, which may differ from the content
    the artifact's checksum describes."""

    def __init__(self, served: bytes) -> None:
        self.served = served
        self.requests = 0

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,  # unused: the reader copes
    ) -> bytes:
        self.requests += 1
        await trio.lowlevel.checkpoint()
        return self.served[start : start + length]

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[Any]:
        self.requests += 1
        storage = self

        class Body:
            pos = start

            async def receive(self, max_bytes: int) -> bytes:
                await trio.lowlevel.checkpoint()
                stop = len(storage.served) if end is None else end + 1
                chunk = storage.served[self.pos : min(stop, self.pos + min(max_bytes, 1000))]
                self.pos += len(chunk)
                return chunk

        yield Body()


def reader_settings() -> Settings:
    return settings_for(
        block_size=BLOCK,
        cache_bytes=256 * BLOCK,
        readahead_per_file=8 * BLOCK,
        readahead_total=32 * BLOCK,
        request_timeout=5.0,
    )


CONTENT = random.Random(7).randbytes(40 * BLOCK + 321)
ARTIFACT = Artifact(id="a1", name="data.bin", size=len(CONTENT), checksum=sha256(CONTENT))
CORRUPT = CONTENT[:100_000] + bytes([CONTENT[100_000] ^ 1]) + CONTENT[100_001:]


async def read_in_order(reader: Reader, handle: ReadHandle, chunk: int = 3000) -> bytes:
    out = bytearray()
    while data := await reader.read(handle, len(out), chunk):
        out += data
    return bytes(out)


async def test_a_sequential_read_is_verified_off_the_read_path() -> None:
    async with open_reader(TamperedStorage(CONTENT), reader_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_in_order(reader, handle) == CONTENT
        stats = reader.statistics()
        assert (stats.verified, stats.verify_failures) == (1, 0)
        assert stats.hashed_bytes == len(CONTENT)
        await reader.release(handle)


async def read_until_error(reader: Reader, handle: ReadHandle) -> tuple[bytes, Exception | None]:
    """Read *handle* in order until the end or an error; return the bytes and the error."""
    out = bytearray()
    try:
        while data := await reader.read(handle, len(out), 3000):
            out += data
    except IntegrityError as exc:
        return bytes(out), exc
    return bytes(out), None


async def test_corrupt_content_fails_the_last_read_and_leaves_the_cache() -> None:
    storage = TamperedStorage(CORRUPT)
    async with open_reader(storage, reader_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        returned, error = await read_until_error(reader, handle)
        assert "does not match its checksum" in str(error)
        # Everything before the last read was returned; the last read never is.
        assert len(CONTENT) - 3000 < len(returned) < len(CONTENT)
        assert reader.statistics().verify_failures == 1
        assert reader.statistics().cache.entries == 0
        # The kernel retries a failed read-ahead read synchronously: that fails too.
        with pytest.raises(IntegrityError):
            await reader.read(handle, len(CONTENT) - 10, 10)
        with pytest.raises(IntegrityError):
            await reader.read(handle, 0, 10)
        await reader.release(handle)
        # Until the content verifies again, new handles must not trust the page cache.
        storage.served = CONTENT
        suspect = reader.open(ARTIFACT, len(CONTENT))
        assert suspect.keep_cache is False
        requests = storage.requests
        assert await read_in_order(reader, suspect) == CONTENT
        assert storage.requests > requests  # fetched again, not served from the cache
        await reader.release(suspect)
        trusted = reader.open(ARTIFACT, len(CONTENT))
        assert trusted.keep_cache is True
        await reader.release(trusted)
        assert reader.statistics().verified == 1


async def read_concurrently(
    reader: Reader, handle: ReadHandle, order: list[tuple[int, int]]
) -> int:
    """Read the pieces of *order* 8 at a time, each window's reads completing in the order
    given (as the kernel's concurrent read-ahead may); return how many failed verification."""
    failures = 0

    async def read_one(position: int, off: int, size: int) -> None:
        nonlocal failures
        await trio.sleep(position * 0.001)
        try:
            await reader.read(handle, off, size)
        except IntegrityError:
            failures += 1

    for window in range(0, len(order), 8):
        async with trio.open_nursery() as nursery:
            batch = order[window : window + 8]
            for position, (off, size) in enumerate(random.Random(window).sample(batch, len(batch))):
                nursery.start_soon(read_one, position, off, size)
    return failures


async def test_reads_completing_out_of_order_are_still_verified() -> None:
    """The kernel sends several reads at once; they may complete in any order."""
    pieces = [(off, min(5000, len(CONTENT) - off)) for off in range(0, len(CONTENT), 5000)]
    for served, failures in ((CORRUPT, 1), (CONTENT, 0)):
        async with open_reader(TamperedStorage(served), reader_settings()) as reader:
            handle = reader.open(ARTIFACT, len(CONTENT))
            assert await read_concurrently(reader, handle, pieces) == failures
            stats = reader.statistics()
            assert (stats.verified, stats.verify_failures) == (1 - failures, failures)


async def test_partial_or_random_reads_and_missing_checksums_are_not_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify, "VERIFY_BACKLOG", 8 * BLOCK)
    async with open_reader(TamperedStorage(CORRUPT), reader_settings()) as reader:
        partial = reader.open(ARTIFACT, len(CONTENT))
        assert await reader.read(partial, 0, 150_000) == CORRUPT[:150_000]
        jumpy = reader.open(ARTIFACT, len(CONTENT))
        assert await reader.read(jumpy, 30 * BLOCK, 100) == CORRUPT[30 * BLOCK : 30 * BLOCK + 100]
        assert await read_in_order(reader, jumpy) == CORRUPT  # too far ahead: no verdict
        unchecked = Artifact(id="a2", name="x", size=len(CONTENT), checksum="")
        handle = reader.open(unchecked, len(CONTENT))
        assert await read_in_order(reader, handle) == CORRUPT
        stats = reader.statistics()
        assert (stats.verified, stats.verify_failures) == (0, 0)

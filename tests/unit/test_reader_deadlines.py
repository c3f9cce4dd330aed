"""The reader's deadline against a fake storage that stalls, on trio's mock clock (autojump).

A read fails with DeadlineExceeded after ``request_timeout``; the kernel's immediate retry
of that read (an overlapping read of the same handle) fails at once instead of waiting a
second deadline; other ranges, other handles and reads after ``FAILED_READ_HOLD`` ask storage
again. Through a real mount: ``tests/mount/test_outages.py``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from helpers import settings_for, sha256

from simvuefs.errors import DeadlineExceeded, NotFound
from simvuefs.models import Artifact
from simvuefs.read.reader import FAILED_READ_HOLD, open_reader

BLOCK = 4096
TIMEOUT = 5.0
CONTENT = random.Random(3).randbytes(64 * BLOCK)
ARTIFACT = Artifact(id="a1", name="data.bin", size=len(CONTENT), checksum=sha256(CONTENT))
SETTINGS = settings_for(
    block_size=BLOCK,
    cache_bytes=256 * BLOCK,
    readahead_per_file=8 * BLOCK,
    readahead_total=32 * BLOCK,
    request_timeout=TIMEOUT,
)


class StallingStorage:
    """Serves CONTENT, or, while *stalled*, never answers; counts the requests."""

    def __init__(self) -> None:
        self.stalled = True
        self.requests = 0

    async def _wait(self) -> None:
        self.requests += 1
        if self.stalled:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes:
        await self._wait()
        return CONTENT[start : start + length]

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[Any]:
        await self._wait()
        stop = len(CONTENT) if end is None else end + 1

        class Body:
            pos = start

            async def receive(self, max_bytes: int) -> bytes:
                await trio.lowlevel.checkpoint()
                chunk = CONTENT[self.pos : min(stop, self.pos + max_bytes)]
                self.pos += len(chunk)
                return chunk

        yield Body()


async def test_the_retry_of_a_timed_out_read_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = StallingStorage()
    async with open_reader(storage, SETTINGS) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        started = trio.current_time()
        with pytest.raises(DeadlineExceeded, match="took longer than 5 s"):
            await reader.read(handle, 0, 32 * 1024)  # a read-ahead read of 8 blocks
        assert trio.current_time() - started == pytest.approx(TIMEOUT)
        requests = storage.requests
        # The kernel's retry: a smaller read of the same range, at once.
        retried = trio.current_time()
        with pytest.raises(DeadlineExceeded):
            await reader.read(handle, 0, 4096)
        assert trio.current_time() == retried
        assert storage.requests == requests  # storage was not asked again
        # Another range of the same handle, and another handle, do ask (and wait) again.
        with pytest.raises(DeadlineExceeded):
            await reader.read(handle, 40 * BLOCK, 4096)
        other = reader.open(ARTIFACT, len(CONTENT))
        before = trio.current_time()
        with pytest.raises(DeadlineExceeded):
            await reader.read(other, 0, 4096)
        assert trio.current_time() - before == pytest.approx(TIMEOUT)
        assert storage.requests == requests + 2
        await reader.release(other)
        await reader.release(handle)


async def test_a_handle_reads_again_once_the_hold_is_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = StallingStorage()
    async with open_reader(storage, SETTINGS) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        with pytest.raises(DeadlineExceeded):
            await reader.read(handle, 0, 8192)
        storage.stalled = False
        with pytest.raises(DeadlineExceeded):
            await reader.read(handle, 4096, 100)  # still held, though storage is back
        await trio.sleep(FAILED_READ_HOLD)
        assert await reader.read(handle, 0, 8192) == CONTENT[:8192]
        assert handle.held is None
        await reader.release(handle)


async def test_concurrent_failures_are_held_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A read and the kernel's read-ahead fail together; a retry of either fails at once."""
    storage = StallingStorage()
    async with open_reader(storage, SETTINGS) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))

        async def read(off: int) -> None:
            with pytest.raises(DeadlineExceeded):
                await reader.read(handle, off, 8192)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, 0)
            nursery.start_soon(read, 16 * BLOCK)
        requests = storage.requests
        retried = trio.current_time()
        for off in (0, 16 * BLOCK):
            with pytest.raises(DeadlineExceeded):
                await reader.read(handle, off, 4096)
        assert (trio.current_time(), storage.requests) == (retried, requests)
        await reader.release(handle)


async def test_quick_refusals_are_not_held() -> None:
    """A 404 comes back at once: the next read asks storage again."""
    storage = StallingStorage()
    storage.stalled = False
    async with open_reader(storage, SETTINGS) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        original = storage.read_range

        async def refuse(*args: Any, **kwargs: Any) -> bytes:
            storage.requests += 1
            raise NotFound("gone", status=404)

        storage.read_range = refuse  # type: ignore[method-assign]
        with pytest.raises(NotFound):
            await reader.read(handle, 0, 4096)
        storage.read_range = original  # type: ignore[method-assign]
        assert await reader.read(handle, 0, 4096) == CONTENT[:4096]
        assert handle.held is None
        await reader.release(handle)

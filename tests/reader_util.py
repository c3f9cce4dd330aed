"""A fake storage for the reader's unit tests, and small settings and contents to read.

``FakeStorage`` is a duck-typed :class:`~simvuefs.backends.protocol.RangeSource` over
in-memory bytes, with counters and switches; small blocks (``BLOCK``) keep the block
arithmetic of the tests visible, ``READ`` is their "kernel read size" (a quarter block).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.lowlevel
from helpers import settings_for, sha256

from simvuefs.backends.protocol import fill_by_receive
from simvuefs.config import Settings
from simvuefs.errors import TransportError
from simvuefs.models import Artifact
from simvuefs.read.reader import Reader, ReadHandle

BLOCK = 4096
READ = 1024


def make_settings(**overrides: Any) -> Settings:
    """Settings with ``BLOCK``-sized blocks, a 256-block cache, 8/32-block read-ahead, and
    read-ahead parts of 2 blocks, at most 4 in flight per file."""
    values: dict[str, Any] = {
        "block_size": BLOCK,
        "cache_bytes": 256 * BLOCK,
        "readahead_per_file": 8 * BLOCK,
        "readahead_total": 32 * BLOCK,
        "read_part_size": 2 * BLOCK,
        "read_streams": 4,
        "request_timeout": 5.0,
    }
    return settings_for(None, **{**values, **overrides})


def make_content(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def make_artifact(name: str, content: bytes) -> Artifact:
    return Artifact(id=f"id-{name}", name=name, size=len(content), checksum=sha256(content))


CONTENT = make_content(64 * BLOCK + 123)
ARTIFACT = make_artifact("big.bin", CONTENT)


class FakeBody:
    def __init__(self, storage: FakeStorage, data: bytes) -> None:
        self.storage = storage
        self.data = data
        self.pos = 0

    async def receive(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        storage = self.storage
        fail_at = storage.stream_fail_at
        if fail_at is not None and self.pos >= fail_at:
            storage.stream_failures -= 1
            if storage.stream_failures <= 0:
                storage.stream_fail_at = None
            raise TransportError("connection reset by fake storage")
        if storage.body_gate is not None and self.pos > 0:
            await storage.body_gate.wait()
        if storage.seconds_per_chunk and self.pos % (storage.chunk * storage.burst) == 0:
            # each connection's own rate, the time of *burst* chunks before the first of them
            slow = storage.stall_factor if storage.stalled() else 1
            await trio.sleep(storage.seconds_per_chunk * storage.burst * slow)
        storage.open_streams_seen.append(storage.open_streams)
        chunk = self.data[self.pos : self.pos + min(max_bytes, self.storage.chunk)]
        self.pos += len(chunk)
        self.storage.bytes_sent += len(chunk)
        return chunk


class FillingFakeBody(FakeBody):
    """A :class:`FakeBody` that also fills whole blocks (``BlockBody``), as storage range
    GETs do; ``storage.fills`` counts the calls."""

    async def readinto(self, view: memoryview) -> int:
        self.storage.fills += 1
        return await fill_by_receive(self.receive, view)


class FakeStorage:
    """In-memory artifacts served through ``read_range`` and ``open_range``, with counters.

    *gate*, when not None, holds every request until it is set; *range_gate* holds bounded
    GETs after their first piece, *body_gate* ``open_range`` bodies; *error* is raised by
    every request while set; *stream_fail_at* makes the next *stream_failures* bodies that
    get that far (bytes from their start) fail; *seconds_per_chunk* caps the rate of each
    connection (``open_range`` body), *burst* chunks at a time (as a socket's buffer hands
    out what came while nobody read), *stall_factor* times slower while the clock is in
    *stall* (``(from, to)`` seconds: every connection at once, as when the machine is busy).
    ``ranges`` records every ``open_range`` as ``(start, end)`` (inclusive end),
    ``open_streams_peak`` the most bodies open at once, ``open_streams_seen`` the bodies open
    at each piece a body handed out.
    """

    def __init__(
        self, *artifacts: tuple[Artifact, bytes], chunk: int = 1000, fills: bool = False
    ) -> None:
        self.contents = {artifact.id: content for artifact, content in artifacts}
        self.chunk = chunk
        self.body_type = FillingFakeBody if fills else FakeBody
        self.fills = 0
        self.range_gets = 0
        self.streams = 0
        self.open_streams = 0
        self.bytes_sent = 0
        self.gate: trio.Event | None = None
        self.error: Exception | None = None
        self.stream_fail_at: int | None = None
        self.stream_failures = 1
        self.range_gate: trio.Event | None = None
        self.body_gate: trio.Event | None = None
        self.seconds_per_chunk = 0.0
        self.burst = 1
        self.stall: tuple[float, float] | None = None
        self.stall_factor = 1.0
        self.open_streams_seen: list[int] = []
        self.ranges: list[tuple[int, int | None]] = []
        self.open_streams_peak = 0

    def stalled(self) -> bool:
        """True while the clock is within *stall*."""
        return self.stall is not None and self.stall[0] <= trio.current_time() < self.stall[1]

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
        self.ranges.append((start, end))
        await self._admit()
        self.open_streams += 1
        self.open_streams_peak = max(self.open_streams_peak, self.open_streams)
        try:
            stop = None if end is None else end + 1  # an inclusive end, as HTTP's
            yield self.body_type(self, self.contents[artifact.id][start:stop])
        finally:
            self.open_streams -= 1


async def read_through(reader: Reader, handle: ReadHandle, chunk: int = READ) -> bytes:
    """Read *handle* from 0 to its end in *chunk*-sized reads, each full but the last."""
    return await read_through_from(reader, handle, 0, chunk)


async def read_through_from(
    reader: Reader, handle: ReadHandle, offset: int, chunk: int = READ
) -> bytes:
    """Read *handle* from *offset* to its end in *chunk*-sized reads, each full but the last."""
    out = bytearray()
    while True:
        data = await reader.read(handle, offset + len(out), chunk)
        if not data:
            return bytes(out)
        assert len(data) == chunk or offset + len(out) + len(data) == handle.size
        out += data

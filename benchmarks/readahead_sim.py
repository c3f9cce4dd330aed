"""The read-ahead policy in virtual time: the real ``Reader`` against a simulated storage.

Storage answers each request after ``--first-byte-ms`` (a new connection's round trips, or
one round trip on a pooled one) and then sends each connection's body at ``--rate``, as
object storage does per connection; no other bound (no CPU, no link total). The readers
take 1 MiB reads as fast as the bytes come, under trio's ``MockClock`` (autojump), so the
figures are those of the policy alone, the same on a loaded machine as on a quiet one:
MiB/s of virtual time, against the ideal of 8 ranged GETs of the file (one reader) or one
GET per file (parallel readers), with the GETs and connections it took and the reads that
waited for blocks in flight. Settings are the defaults (``--set name=value`` to change one)
with verification off (it changes no request).

Run it with a tree's interpreter to measure that tree's policy, e.g.
``.venv/bin/python benchmarks/readahead_sim.py --first-byte-ms 60``. Self-contained (only
simvuefs and trio), so that ``PYTHONPATH=<another tree>`` runs that tree's reader with it
(an A/B of two policies in virtual time, whatever the machine's load).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from simvuefs.config import Settings
from simvuefs.models import Artifact
from simvuefs.read.reader import ReaderStats, open_reader

MIB = 1024 * 1024
CHUNK = 64 * 1024
"""Bytes a simulated connection delivers per receive."""


class SimulatedBody:
    """One connection's body: *data* at *rate* bytes/s in :data:`CHUNK` pieces."""

    def __init__(self, data: bytes, rate: float) -> None:
        self._data = data
        self._position = 0
        self._rate = rate

    async def receive(self, max_bytes: int) -> bytes:
        piece = self._data[self._position : self._position + min(max_bytes, CHUNK)]
        if piece:
            await trio.sleep(len(piece) / self._rate)
        self._position += len(piece)
        return piece


class SimulatedStorage:
    """A ``RangeSource`` over in-memory contents with a first-byte delay and a rate per
    connection; counts requests and the most connections open at once."""

    def __init__(self, contents: dict[str, bytes], first_byte: float, rate: float) -> None:
        self._contents = contents
        self._first_byte = first_byte
        self._rate = rate
        self.requests = 0
        self.open = 0
        self.open_peak = 0

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[SimulatedBody]:
        self.requests += 1
        self.open += 1
        self.open_peak = max(self.open_peak, self.open)
        try:
            await trio.sleep(self._first_byte)
            stop = None if end is None else end + 1
            yield SimulatedBody(self._contents[artifact.id][start:stop], self._rate)
        finally:
            self.open -= 1

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes:
        async with self.open_range(artifact, start, start + length - 1) as body:
            pieces = []
            while piece := await body.receive(CHUNK):
                if on_chunk is not None:
                    on_chunk(piece)
                pieces.append(piece)
        return b"".join(pieces)


async def read_files(
    readers: int, size: int, first_byte: float, rate: float, overrides: dict[str, Any]
) -> tuple[float, SimulatedStorage, ReaderStats]:
    """Read *readers* files of *size* bytes at once; return (virtual seconds, storage,
    reader counters)."""
    contents = {f"sim-{i}": os.urandom(size) for i in range(readers)}
    artifacts = [Artifact(id=key, name=f"{key}.bin", size=size) for key in contents]
    storage = SimulatedStorage(contents, first_byte, rate)
    settings = Settings(
        url="http://simulated.invalid/api",
        token="simulated",
        verify_content=False,
        request_timeout=3600.0,
        **overrides,
    )
    async with open_reader(storage, settings) as reader:

        async def read_whole(artifact: Artifact) -> None:
            handle = reader.open(artifact, size)
            offset = 0
            while offset < size:
                data = await reader.read(handle, offset, MIB)
                if data != contents[artifact.id][offset : offset + MIB]:
                    raise AssertionError(f"wrong bytes of {artifact.name} at {offset}")
                offset += len(data)
            await reader.release(handle)

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for artifact in artifacts:
                nursery.start_soon(read_whole, artifact)
        seconds = trio.current_time() - began
        stats = reader.statistics()
    return seconds, storage, stats


def ideal(readers: int, size: int, first_byte: float, rate: float) -> float:
    """MiB/s of the reference: 8 ranged GETs of one file, or one GET per file."""
    streams, piece = (8, size / 8) if readers == 1 else (readers, size)
    return streams * piece / (piece / rate + first_byte) / MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first-byte-ms", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0, help="MB/s per connection")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    overrides: dict[str, Any] = {
        name: int(value) for name, value in (s.split("=", 1) for s in args.set)
    }
    first_byte, rate = args.first_byte_ms / 1000, args.rate * 1e6
    for readers, size in ((1, 512 * MIB), (16, 32 * MIB)):
        clock = trio.testing.MockClock(autojump_threshold=0)
        seconds, storage, stats = trio.run(
            read_files, readers, size, first_byte, rate, overrides, clock=clock
        )
        rate_mib = readers * size / seconds / MIB
        reference = ideal(readers, size, first_byte, rate)
        print(
            f"{readers:2d} x {size // MIB} MiB: {rate_mib:6.0f} MiB/s = "
            f"{rate_mib / reference:.2f}x the reference ({reference:.0f}); "
            f"GETs {storage.requests}, connections at once {storage.open_peak}, "
            f"parts in flight per file {stats.parts_in_flight_peak}, "
            f"reads that waited {stats.cache.joins}"
        )


if __name__ == "__main__":
    main()

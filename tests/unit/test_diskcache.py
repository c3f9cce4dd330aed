"""The content cache below the mount: its directory (store, usage) and CachingSource over a
fake RangeSource that counts what it is asked for (mount-level checks:
tests/mount/test_content_cache.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from simvuefs.diskcache.source import CachingSource
from simvuefs.diskcache.store import CELL, ContentStore, DamagedPart, Part, cells
from simvuefs.diskcache.usage import evict, measure
from simvuefs.models import Artifact

SHA = "ab" * 32
CONTENT = bytes(range(256)) * (3 * CELL // 256 + 1000)


class CountingSource:
    """Serves CONTENT; records every range it is asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes:
        self.asked.append((start, length))
        data = CONTENT[start : start + length]
        if on_chunk is not None:
            on_chunk(data)
        return data

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[_Body]:
        stop = len(CONTENT) if end is None else end + 1
        self.asked.append((start, stop - start))
        yield _Body(CONTENT[start:stop])


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def receive(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        chunk, self._data = self._data[: min(max_bytes, 65536)], self._data[min(max_bytes, 65536) :]
        return chunk


ARTIFACT = Artifact(id="a", name="a", size=len(CONTENT), checksum=SHA)


def test_part_names_carry_their_crc_and_cells_cut_on_the_grid() -> None:
    name = Part.name_of(5, [b"hello", b" world"])
    assert name == f"5-11-{zlib.crc32(b'hello world'):08x}"
    assert Part.parse(name) == Part(5, 16, zlib.crc32(b"hello world"), name)
    for other in ("used", "claim-3", ".tmp-host-1-ab", "1-0-00000000", "1-2-xyz"):
        assert Part.parse(other) is None
    pieces = cells(CELL - 3, b"x" * (CELL + 10))
    assert [(start, len(piece)) for start, piece in pieces] == [
        (CELL - 3, 3),
        (CELL, CELL),
        (2 * CELL, 7),
    ]


def test_a_damaged_part_is_deleted_and_a_stale_claim_taken_over(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    assert store.prepare()
    part = store.store(SHA, 100, [b"0123456789"])
    assert store.read(SHA, part, 102, 105, trusted=False) == [b"234"]
    path = store.entry(SHA) / part.name
    path.write_bytes(b"0123456780")  # one byte changed
    with pytest.raises(DamagedPart):
        store.read(SHA, part, 100, 110, trusted=False)
    assert not path.exists()
    assert store.claim(SHA, 0)
    assert not store.claim(SHA, 0)  # held by this process
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    claim = store.entry(SHA) / "claim-0"
    host = claim.read_text().rsplit(" ", 1)[0]
    claim.write_text(f"{host} {int(dead.stdout)}\n")  # a process of this machine that is gone
    assert not store.claimed(SHA, 0)
    assert store.claim(SHA, 0)


def test_eviction_removes_least_recently_used_entries_first(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.prepare()
    for number, sha in enumerate(("11" * 32, "22" * 32, "33" * 32)):
        store.store(sha, 0, [b"x" * 1000])
        store.touch(sha)
        os.utime(store.entry(sha) / "used", (1000 + number, 1000 + number))
        for part in store.parts(sha):
            os.utime(store.entry(sha) / part.name, (1000 + number, 1000 + number))
    assert measure(tmp_path).entries == 3
    assert evict(tmp_path, 2000) == (1, 1000)
    assert not store.entry("11" * 32).exists()
    assert measure(tmp_path).size == 2000


async def test_ranges_are_fetched_once_and_partial_reads_cache_what_they_read(
    tmp_path: Path,
) -> None:
    inner = CountingSource()
    store = ContentStore(tmp_path)
    store.prepare()
    async with trio.open_nursery() as nursery:
        cache = CachingSource(inner, store, 1 << 30, nursery, writable=True)
        assert await cache.read_range(ARTIFACT, 1000, 4096) == CONTENT[1000:5096]
        await cache.settled()
        assert measure(tmp_path).size == 4096  # about what was read, not a cell
        assert await cache.read_range(ARTIFACT, 2000, 1000) == CONTENT[2000:3000]
        assert inner.asked == [(1000, 4096)]
        # A stream over the whole content: only the gaps are fetched, cut at cells.
        async with cache.open_range(ARTIFACT, 0) as body:
            received = []
            while chunk := await body.receive(1 << 20):
                received.append(chunk)
        assert b"".join(received) == CONTENT
        await cache.settled()
        # Each store removed the claims it ended: none is left once the stores are done.
        assert not [name for name in os.listdir(store.entry(SHA)) if name.startswith("claim-")]
        assert inner.asked[1] == (0, 1000)
        assert sum(length for _, length in inner.asked) == len(CONTENT)
        asked = len(inner.asked)
        async with cache.open_range(ARTIFACT, 7) as body:
            assert await body.receive(10) == CONTENT[7:17]
        assert await cache.read_range(ARTIFACT, CELL - 5, 10) == CONTENT[CELL - 5 : CELL + 5]
        assert len(inner.asked) == asked  # all from disk now
        assert cache.stats.stored_bytes == len(CONTENT)
        nursery.cancel_scope.cancel()

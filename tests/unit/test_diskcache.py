"""The content cache below the mount: its directory (store, usage) and CachingSource over a
fake RangeSource that counts what it is asked for (mount-level checks:
tests/mount/test_content_cache.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from simvuefs.backends.protocol import BlockBody
from simvuefs.diskcache import cells as cells_module
from simvuefs.diskcache.seals import SealBook
from simvuefs.diskcache.source import CachingSource
from simvuefs.diskcache.store import (
    CELL,
    WRITE_SPAN,
    ContentStore,
    DamagedPart,
    Part,
    Piece,
    Seal,
    cells,
)
from simvuefs.diskcache.usage import evict, measure
from simvuefs.errors import IntegrityError
from simvuefs.models import Artifact

SHA = "ab" * 32
CONTENT = bytes(range(256)) * (3 * CELL // 256 + 1000)


class CountingSource:
    """Serves CONTENT; records every range it is asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []
        self.corrupt = False  # flip the first byte of every range sent
        self.fills: list[int] | None = None  # a list: streams fill buffers, their lengths

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes:
        self.asked.append((start, length))
        data = CONTENT[start : start + length]
        if self.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        if on_chunk is not None:
            on_chunk(data)
        return data

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[_Body]:
        stop = len(CONTENT) if end is None else end + 1
        self.asked.append((start, stop - start))
        data = CONTENT[start:stop]
        yield _Body(data) if self.fills is None else _FillBody(data, self.fills)


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


def test_parts_are_written_in_slices_of_at_most_write_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A buffered write's length sets the size of the page-cache folios it takes; large ones
    # cost a VM that hands free memory back to its host several times more (session 8).
    store = ContentStore(tmp_path)
    assert store.prepare()
    data = os.urandom(3 * WRITE_SPAN + 5)
    lengths: list[int] = []
    write = os.write

    def short_write(descriptor: int, view: memoryview) -> int:  # and shorter than asked
        lengths.append(len(view))
        return write(descriptor, view[: max(len(view) - 1, 1)])

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", short_write)
        part = store.store(SHA, 0, [data[:10], data[10:]])
    assert max(lengths) == WRITE_SPAN
    assert part.stop == len(data)
    assert b"".join(store.read(SHA, part, 0, len(data), trusted=False) or []) == data


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


class _FillBody(_Body):
    """A body that can also fill a caller's buffer (a storage GET on plain TCP)."""

    def __init__(self, data: bytes, fills: list[int]) -> None:
        super().__init__(data)
        self._fills = fills

    async def readinto(self, view: memoryview) -> int:
        await trio.lowlevel.checkpoint()
        count = min(len(view), len(self._data))
        view[:count], self._data = self._data[:count], self._data[count:]
        self._fills.append(count)
        return count


async def test_a_stream_fills_blocks_straight_from_the_inner_body_and_stores_them(
    tmp_path: Path,
) -> None:
    """readinto (the read-ahead's blocks): bytes on disk are copied in, a gap's bytes go from
    the inner body into the block in one call per block (cut at cells), and the parts stored
    from views of the blocks hold exactly the content; another stream following this one
    gets bytes, never a view of a block."""
    inner = CountingSource()
    inner.fills = []
    store = ContentStore(tmp_path)
    store.prepare()
    block = 1 << 20
    async with trio.open_nursery() as nursery:
        cache = CachingSource(inner, store, 1 << 30, nursery, writable=True)
        assert (
            await cache.read_range(ARTIFACT, block + 100, 5000)
            == CONTENT[block + 100 : block + 5100]
        )
        await cache.settled()
        blocks = []
        async with cache.open_range(ARTIFACT, 0) as body:
            assert isinstance(body, BlockBody)
            while filled := await body.readinto(memoryview(buffer := bytearray(block))):
                blocks.append(bytes(buffer[:filled]))
        assert b"".join(blocks) == CONTENT
        assert all(len(b) == block for b in blocks[:-1])
        assert inner.fills is not None
        assert max(inner.fills) <= block  # one fill per block at most, never past a cell
        assert sum(inner.fills) == len(CONTENT) - 5000
        await cache.settled()
        assert cache.stats.stored_bytes == len(CONTENT)
        asked = len(inner.asked)
        # Read back from the parts written from the views: nothing fetched.
        assert await cache.read_range(ARTIFACT, 0, len(CONTENT)) == CONTENT
        assert len(inner.asked) == asked
        nursery.cancel_scope.cancel()
    follower = cells_module.Filling(0, None)
    follower.add(memoryview(b"abcdef").toreadonly())
    taken = follower.take(2, 3)
    assert taken == b"cde"
    assert isinstance(taken, bytes)


async def read_all(cache: CachingSource) -> bytes:
    """Stream the whole content through *cache*, as the read-ahead does."""
    received = []
    async with cache.open_range(ARTIFACT, 0) as body:
        while chunk := await body.receive(1 << 20):
            received.append(chunk)
    return b"".join(received)


async def test_verified_content_is_sealed_and_sealed_reads_check_every_part(
    tmp_path: Path,
) -> None:
    inner = CountingSource()
    store = ContentStore(tmp_path)
    store.prepare()
    async with trio.open_nursery() as nursery:
        cache = CachingSource(inner, store, 1 << 30, nursery, writable=True)
        assert await cache.open_sealed(ARTIFACT, len(CONTENT)) is None  # nothing on disk
        assert await read_all(cache) == CONTENT
        cache.verified(ARTIFACT, len(CONTENT))  # what the reader says once the sha256 matched
        await cache.settled()
        seal = store.read_seal(SHA)
        assert seal is not None
        assert seal.size == len(CONTENT)
        assert [p.name for p in seal.parts] == [p.name for p in store.parts(SHA)]
        # Bit rot in one part, another part gone: both fetched again, exactly, and checked.
        damaged, gone = seal.parts[1], seal.parts[2]
        path = store.entry(SHA) / damaged.name
        data = bytearray(path.read_bytes())
        data[5] ^= 1
        path.write_bytes(bytes(data))
        (store.entry(SHA) / gone.name).unlink()
        fresh = CachingSource(inner, store, 1 << 30, nursery, writable=True)  # a new mount
        sealed = await fresh.open_sealed(ARTIFACT, len(CONTENT))
        assert sealed is not None
        asked = len(inner.asked)
        pieces = [await sealed.read(off, 1 << 20) for off in range(0, len(CONTENT), 1 << 20)]
        assert b"".join(pieces) == CONTENT
        assert await sealed.read(CELL - 7, 20) == CONTENT[CELL - 7 : CELL + 13]
        await fresh.settled()
        # Only those two are fetched (one may be asked twice: the handle's background load
        # of the next part and a read that found it not stored yet can both miss it).
        assert set(inner.asked[asked:]) == {
            (damaged.start, damaged.stop - damaged.start),
            (gone.start, gone.stop - gone.start),
        }
        assert fresh.stats.damaged_parts == 1
        # Storage sending other bytes for a sealed part is an error, never the bytes.
        (store.entry(SHA) / gone.name).unlink()
        inner.corrupt = True
        sealed = await fresh.open_sealed(ARTIFACT, len(CONTENT))
        assert sealed is not None
        with pytest.raises(IntegrityError):
            await sealed.read(gone.start, 4096)
        nursery.cancel_scope.cancel()


class GatedStore(ContentStore):
    """A ContentStore whose part writes wait (in their worker thread) until *opened*."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened = threading.Event()

    def store(self, sha: str, start: int, pieces: list[Piece]) -> Part:
        self.opened.wait(10)
        return super().store(sha, start, pieces)


class HeldSource(CountingSource):
    """A CountingSource whose answers wait until *answer* is set; *in_flight* is set once
    *expected* ranges were asked for."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.in_flight = trio.Event()
        self.answer = trio.Event()

    async def read_range(self, *args: Any, **kwargs: Any) -> bytes:
        data = await super().read_range(*args, **kwargs)  # (recorded in asked)
        if len(self.asked) == self.expected:
            self.in_flight.set()
        await self.answer.wait()
        return data


async def test_admitted_fetches_are_stored_whatever_the_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-ahead's parts are admitted together and arrive together: every one is
    stored, though they take the backlog far over STORE_BACKLOG (a cold read on a slow CPU
    left cells unstored when they were dropped there: session 8)."""
    monkeypatch.setattr(cells_module, "STORE_BACKLOG", CELL)
    store = GatedStore(tmp_path)
    store.prepare()
    source = HeldSource(expected=3)
    async with trio.open_nursery() as nursery:
        cache = CachingSource(source, store, 1 << 30, nursery, writable=True)
        got: dict[int, bytes] = {}

        async def read_cell(index: int) -> None:
            got[index] = await cache.read_range(ARTIFACT, index * CELL, CELL)

        async with trio.open_nursery() as readers:
            for index in range(3):
                readers.start_soon(read_cell, index)
            with trio.fail_after(5):
                await source.in_flight.wait()  # all three admitted and in flight
            source.answer.set()
        assert b"".join(got[i] for i in range(3)) == CONTENT[: 3 * CELL]
        store.opened.set()
        await cache.settled()
        assert cache.stats.store_skipped_bytes == 0
        assert cache.stats.stored_bytes == 3 * CELL
        nursery.cancel_scope.cancel()


async def test_a_fetch_waits_for_room_and_one_never_admitted_is_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch waits while the backlog is full; if it stays full for STORE_WAIT (a cache disk
    that hangs), the fetch goes on and what it brings is not stored; and a seal must name the
    bytes the reader verified, so content with bytes not stored is not sealed."""
    monkeypatch.setattr(cells_module, "STORE_BACKLOG", CELL)
    monkeypatch.setattr(cells_module, "STORE_WAIT", 0.3)
    store = GatedStore(tmp_path)
    store.prepare()
    async with trio.open_nursery() as nursery:
        cache = CachingSource(CountingSource(), store, 1 << 30, nursery, writable=True)
        assert await cache.read_range(ARTIFACT, 0, CELL) == CONTENT[:CELL]  # admitted, held
        began = trio.current_time()
        rest = await cache.read_range(ARTIFACT, CELL, len(CONTENT) - CELL)
        assert trio.current_time() - began >= 0.3  # it waited for room, in vain
        assert rest == CONTENT[CELL:]
        assert cache.stats.store_skipped_bytes == len(CONTENT) - CELL
        cache.verified(ARTIFACT, len(CONTENT))
        store.opened.set()
        await cache.settled()
        assert cache.stats.stored_bytes == CELL
        assert store.read_seal(SHA) is None
        nursery.cancel_scope.cancel()


def test_a_seal_names_parts_that_tile_the_content_once() -> None:
    book = SealBook()
    first, overlapping = Part(0, 10, 1, "0-10-00000001"), Part(5, 15, 2, "5-10-00000002")
    book.served(SHA, first)
    book.served(SHA, overlapping)
    book.verified(SHA, 15)
    assert book.ready(SHA) is None  # two parts hold bytes 5-10: which did the reader get?
    rest = Part(10, 15, 3, "10-5-00000003")
    book.served("cd" * 32, first)
    book.fetched("cd" * 32, 5)
    book.verified("cd" * 32, 15)
    assert book.ready("cd" * 32) is None  # fetched bytes not stored yet
    book.stored("cd" * 32, 5, [rest])
    seal = book.ready("cd" * 32)
    assert seal is not None
    assert seal.parts == (first, rest)
    assert Seal.decode(seal.encode()) == seal
    assert Seal.decode(seal.encode().replace(b"15", b"16", 1)) is None  # its own CRC
    assert book.ready("cd" * 32) is None  # sealed once

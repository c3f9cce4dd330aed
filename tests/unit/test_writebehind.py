"""Tests of simvuefs.write.writebehind: queued writes, their flusher and the running hash.

A real spool in a temporary directory; the Uploader's use of write-behind (and a disk that
really fills up) is tested in tests/server/test_upload.py.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from helpers import sha256

from simvuefs.config import MIB
from simvuefs.errors import LocalError
from simvuefs.write import writebehind
from simvuefs.write.spool import Spool, new_spool_id
from simvuefs.write.writebehind import BATCH, BATCH_DELAY, WRITE_BEHIND, FileWrites, WriteBehind


@dataclass
class File:
    """What write-behind needs of a file (a StagedFile in the daemon)."""

    name: str = "mesh.dat"
    run_id: str = "run-1"
    writes: FileWrites = field(default_factory=FileWrites)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool.open(tmp_path / "spool", min_free=0)
    yield opened
    opened.close()


@asynccontextmanager
async def _write_behind(spool: Spool) -> AsyncIterator[tuple[WriteBehind, int]]:
    """A WriteBehind for *spool* and the fd of a new staging file."""
    fd = spool.create(new_spool_id())
    try:
        async with trio.open_nursery() as nursery:
            yield WriteBehind(spool, nursery), fd
    finally:
        os.close(fd)


async def _write(wb: WriteBehind, f: File, fd: int, offset: int, data: bytes) -> None:
    """Write like the Uploader: queue if the room is known, else wait and write now."""
    grow = len(data)  # tests write only at the end or over zeros they count as growth
    if not wb.queue(f, fd, offset, data, grow):
        await f.writes.wait_written()
        await wb.write_now(f, fd, offset, data, grow)


async def test_queued_writes_reach_the_disk_in_order_and_are_hashed(spool: Spool) -> None:
    f = File()
    chunks = [os.urandom(1000 + i) for i in range(20)]
    async with _write_behind(spool) as (wb, fd):
        assert not wb.queue(f, fd, 0, chunks[0], len(chunks[0]))  # no room measured yet
        await wb.write_now(f, fd, 0, chunks[0], len(chunks[0]))
        offset = len(chunks[0])
        queued = 0
        for chunk in chunks[1:]:
            queued += wb.queue(f, fd, offset, chunk, len(chunk))
            offset += len(chunk)
        assert queued == len(chunks) - 1  # the measured room covers them all
        await f.writes.wait_written()
        assert os.pread(fd, offset + 1, 0) == b"".join(chunks)
        hasher, start = f.writes.take_hash()
        assert (start, hasher.hexdigest()) == (offset, sha256(b"".join(chunks)))
        hasher, start = f.writes.take_hash()  # taken: a second commit hashes from the start
        assert (start, hasher.hexdigest()) == (0, sha256(b""))


async def test_a_stream_of_writes_is_stored_in_gathered_batches(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One batch (one thread hop, one free-space check) per BATCH bytes of a stream of 1 MiB
    # writes, not one per write; a lone write still reaches the disk after BATCH_DELAY.
    monkeypatch.setattr(writebehind, "BATCH_DELAY", 60.0)  # batches gather by size only
    batches = 0
    check_free = spool.check_free

    def counted(grow: int) -> int:
        nonlocal batches
        batches += 1
        return check_free(grow)

    spool.check_free = counted  # type: ignore[method-assign]
    f = File()
    chunk = os.urandom(MIB)
    count = 4 * BATCH // MIB
    async with _write_behind(spool) as (wb, fd):
        batches = 0  # not the check of the file's creation
        for index in range(count):
            await _write(wb, f, fd, index * MIB, chunk)
            await f.writes.wait_written(WRITE_BEHIND)
            await trio.sleep(0.005)  # writes arrive one by one, as FUSE writes do
        await f.writes.wait_written()
        assert os.pread(fd, (count + 1) * MIB, 0) == chunk * count
        assert batches <= 1 + count * MIB // BATCH  # write_now, then gathered batches
        monkeypatch.setattr(writebehind, "BATCH_DELAY", BATCH_DELAY)
        before = batches
        await _write(wb, f, fd, count * MIB, b"lone")
        for _ in range(100):  # nobody waits for it: it goes once the flusher's delay ends
            await trio.sleep(BATCH_DELAY)
            if os.pread(fd, 4, count * MIB) == b"lone":
                break
        assert os.pread(fd, 4, count * MIB) == b"lone"
        assert batches == before + 1
        _, start = f.writes.take_hash()
        assert start == count * MIB + 4


@pytest.mark.parametrize(
    ("truncate_to", "kept"),
    [(None, True), (3000, True), (2000, False)],
)
async def test_the_running_hash_survives_only_sequential_writes(
    spool: Spool, truncate_to: int | None, kept: bool
) -> None:
    f = File()
    async with _write_behind(spool) as (wb, fd):
        await _write(wb, f, fd, 0, b"a" * 3000)
        if truncate_to is not None:
            f.writes.truncated(truncate_to)
        _, start = f.writes.take_hash()
        assert start == (3000 if kept else 0)

    g = File()
    async with _write_behind(spool) as (wb, fd):
        await _write(wb, g, fd, 0, b"a" * 100)
        await _write(wb, g, fd, 50, b"b" * 100)  # overwrites: not sequential
        await g.writes.wait_written()
        _, start = g.writes.take_hash()
        assert start == 0


async def test_a_queued_write_the_disk_refuses_fails_the_file_for_good(spool: Spool) -> None:
    f = File()
    async with _write_behind(spool) as (wb, fd):
        await _write(wb, f, fd, 0, b"first")
        spool.min_free = 1 << 60  # the disk fills up after the room was measured
        assert wb.queue(f, fd, 5, b"second", 6)
        assert wb.queue(f, fd, 11, b"third", 5)
        await f.writes.wait_written()
        with pytest.raises(LocalError, match="kept in reserve") as info:
            f.writes.raise_error()
        assert info.value.errno == errno.ENOSPC
        assert os.pread(fd, 100, 0) == b"first"
        with pytest.raises(LocalError, match="kept in reserve"):
            f.writes.raise_error()  # sticky: every later write, truncate and commit

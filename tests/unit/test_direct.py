"""Tests of simvuefs.write.direct: spool writes that bypass the page cache.

A real spool in a temporary directory (a filesystem with ``O_DIRECT``: ext4 or tmpfs); the
byte counts say which way each byte went, the file's content must be what buffered writes
leave.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import refuse_direct_open

from simvuefs.aligned import ALIGN
from simvuefs.config import MIB
from simvuefs.errors import LocalError
from simvuefs.write import direct
from simvuefs.write.direct import BUFFER, DirectWriter, runs
from simvuefs.write.spool import Spool, new_spool_id


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool.open(tmp_path / "spool", min_free=0)
    yield opened
    opened.close()


@pytest.fixture
def fd(spool: Spool) -> Iterator[int]:
    descriptor = spool.create(new_spool_id())
    yield descriptor
    os.close(descriptor)


def _writes(offset: int, *parts: bytes) -> list[tuple[int, bytes, int]]:
    """Contiguous queued writes from *offset* (growth is not used by the writer)."""
    writes = []
    for data in parts:
        writes.append((offset, data, len(data)))
        offset += len(data)
    return writes


def test_runs_group_contiguous_writes_in_order() -> None:
    writes = [(0, b"ab", 2), (2, b"cd", 2), (10, b"x", 1), (11, b"y", 1), (0, b"z", 1)]
    assert list(runs(writes)) == [(0, [b"ab", b"cd"]), (10, [b"x", b"y"]), (0, [b"z"])]


def test_a_stream_goes_direct_in_whole_blocks_and_its_tail_through_the_cache(
    spool: Spool, fd: int
) -> None:
    """1 MiB writes (as ``cp`` sends them) and a short tail: every whole block direct."""
    parts = [os.urandom(MIB) for _ in range(6)] + [os.urandom(1000)]
    writer = DirectWriter(spool)
    writer.write(fd, _writes(0, *parts))
    assert os.pread(fd, 7 * MIB, 0) == b"".join(parts)
    assert (writer.direct_bytes, writer.buffered_bytes) == (6 * MIB, 1000)


def test_a_run_that_starts_inside_a_block_is_widened_with_the_bytes_before_it(
    spool: Spool, fd: int
) -> None:
    """The next batch continues at the unaligned end of the last one: the block it starts
    in is written again, direct, with the bytes the file holds before the run."""
    first, second = os.urandom(MIB + 1000), os.urandom(2 * ALIGN)
    writer = DirectWriter(spool)
    writer.write(fd, _writes(0, first))
    writer.write(fd, _writes(len(first), second))
    end = len(first) + len(second)
    assert os.pread(fd, end + 1, 0) == first + second
    widened = (end - end % ALIGN) - MIB  # from the block where the second run starts
    assert writer.direct_bytes == MIB + widened
    assert writer.buffered_bytes == 1000 + end % ALIGN


def test_a_run_past_the_end_of_the_file_is_widened_with_zeros(spool: Spool, fd: int) -> None:
    """A write that leaves a hole before it: the hole reads as zeros, as with pwrite."""
    data = os.urandom(3 * ALIGN)
    writer = DirectWriter(spool)
    writer.write(fd, _writes(100, data))
    assert os.pread(fd, 4 * ALIGN, 0) == bytes(100) + data
    assert writer.direct_bytes == 3 * ALIGN


def test_small_writes_and_runs_longer_than_the_buffer(spool: Spool, fd: int) -> None:
    """A run within one block goes through the cache; one of several buffers goes direct
    buffer by buffer; a short run across a block boundary writes its first block direct
    (widened with the bytes before it) and the rest through the cache."""
    big = os.urandom(2 * BUFFER + 3 * ALIGN)
    writer = DirectWriter(spool)
    writer.write(fd, _writes(0, big) + [(10, b"small", 5)] + _writes(ALIGN - 3, b"x" * 7))
    expected = bytearray(big)
    expected[10:15] = b"small"
    expected[ALIGN - 3 : ALIGN + 4] = b"x" * 7
    assert os.pread(fd, len(big) + 1, 0) == bytes(expected)
    assert (writer.direct_bytes, writer.buffered_bytes) == (len(big) + ALIGN, 5 + 4)


def test_a_filesystem_that_refuses_direct_io_gets_buffered_writes(
    spool: Spool, fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_direct_open(monkeypatch)
    parts = [os.urandom(MIB), os.urandom(MIB + 5)]
    writer = DirectWriter(spool)
    writer.write(fd, _writes(0, *parts))
    assert os.pread(fd, 3 * MIB, 0) == b"".join(parts)
    assert (writer.enabled, writer.direct_bytes, writer.buffered_bytes) == (False, 0, 2 * MIB + 5)


def test_other_errors_of_a_direct_write_are_the_writes(
    spool: Spool, fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct, "write_at", full)
    writer = DirectWriter(spool)
    with pytest.raises(LocalError) as info:
        writer.write(fd, _writes(0, os.urandom(MIB)))
    assert info.value.errno == errno.ENOSPC
    assert writer.enabled


def test_a_descriptor_that_cannot_be_reopened_direct_gets_buffered_writes(
    spool: Spool, fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No /proc (or another reason the reopen fails): buffered, never an error."""
    real_open = os.open

    def no_proc(path: str, flags: int, *args: int) -> int:
        if str(path).startswith("/proc/"):
            raise OSError(errno.ENOENT, "No such file or directory")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct.os, "open", no_proc)
    data = os.urandom(MIB)
    writer = DirectWriter(spool)
    writer.write(fd, _writes(0, data))
    assert os.pread(fd, 2 * MIB, 0) == data
    assert (writer.enabled, writer.buffered_bytes) == (False, MIB)

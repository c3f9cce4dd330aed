"""Parts written past the page cache (``diskcache/direct.py``): exact bytes whatever the
length, no page-cache pages where the file system takes ``O_DIRECT``, and buffered writes
where it refuses."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from pathlib import Path

import pytest

from simvuefs.aligned import ALIGN
from simvuefs.diskcache.direct import DirectIO
from simvuefs.diskcache.store import CELL, ContentStore, DamagedPart, Part

SHA = "cd" * 32
PIECES = [os.urandom(CELL // 2), os.urandom(CELL // 4 + 123)]


def test_a_part_is_written_exactly_whatever_its_length(tmp_path: Path) -> None:
    writer = DirectIO(CELL + ALIGN)
    for length in (1, ALIGN - 1, ALIGN, 3 * ALIGN + 17, CELL, CELL + 5):
        data = os.urandom(length)
        path = tmp_path / f"part-{length}"
        writer.write_new(path, [memoryview(data)[:7], data[7:]])
        assert path.read_bytes() == data
    with pytest.raises(FileExistsError):
        writer.write_new(tmp_path / f"part-{ALIGN}", [b"x" * ALIGN])


def test_a_stored_part_leaves_no_pages_in_the_page_cache(tmp_path: Path) -> None:
    if _file_system(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip(f"{tmp_path} is in memory: its pages are its storage")
    store = ContentStore(tmp_path)
    store.prepare()
    part = store.store(SHA, 0, PIECES)
    path = store.entry(SHA) / part.name
    # Only the tail that is not a whole block goes through the page cache.
    assert _resident_pages(path) <= 1
    assert store.read(SHA, part, 0, part.stop, trusted=False) is not None
    assert path.read_bytes() == b"".join(PIECES)
    assert part == Part.parse(Part.name_of(0, PIECES))


def test_parts_read_past_the_page_cache_give_exact_bytes_and_find_damage(
    tmp_path: Path,
) -> None:
    store = ContentStore(tmp_path)
    store.prepare()
    content = b"".join(PIECES)
    part = store.store(SHA, CELL, PIECES)
    for start, stop in (
        (CELL, part.stop),
        (CELL + 5, CELL + ALIGN + 7),
        (part.stop - 9, part.stop),
    ):
        for trusted in (False, True):
            pieces = store.read(SHA, part, start, stop, trusted=trusted)
            assert pieces is not None
            assert b"".join(pieces) == content[start - CELL : stop - CELL]
    path = store.entry(SHA) / part.name
    with path.open("r+b") as file:  # one byte flipped in the middle
        file.seek(ALIGN + 1)
        flipped = bytes([file.read(1)[0] ^ 1])
        file.seek(ALIGN + 1)
        file.write(flipped)
    with pytest.raises(DamagedPart):
        store.read(SHA, part, CELL, part.stop, trusted=False)
    assert not path.exists()


def test_a_file_system_refusing_o_direct_at_open_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    direct_opens = []

    def refusing_open(path: Path, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            direct_opens.append(path)
            raise OSError(errno.EINVAL, "O_DIRECT refused")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refusing_open)
    writer = DirectIO(CELL + ALIGN)
    for name in ("first", "second"):
        writer.write_new(tmp_path / name, PIECES)
        assert (tmp_path / name).read_bytes() == b"".join(PIECES)
    assert writer.refused
    assert len(direct_opens) == 1  # not tried again
    store = ContentStore(tmp_path / "cache")
    store.prepare()
    part = store.store(SHA, 0, PIECES)
    assert b"".join(store.read(SHA, part, 0, part.stop, trusted=False) or []) == b"".join(PIECES)
    assert len(direct_opens) == 2  # the store's own writer: refused once, then buffered


def test_a_file_system_refusing_o_direct_writes_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def refusing_write(descriptor: int, data: bytes | memoryview) -> int:
        if fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT write refused")
        return real_write(descriptor, data)

    monkeypatch.setattr(os, "write", refusing_write)
    writer = DirectIO(CELL + ALIGN)
    writer.write_new(tmp_path / "part", PIECES)
    assert (tmp_path / "part").read_bytes() == b"".join(PIECES)
    assert writer.refused


def _resident_pages(path: Path) -> int:
    """How many of *path*'s pages are in the page cache (``mincore``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, descriptor, 0)
        assert address not in (None, ctypes.c_void_p(-1).value)
        vector = (ctypes.c_ubyte * pages)()
        try:
            assert libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) == 0
        finally:
            libc.munmap(ctypes.c_void_p(address), ctypes.c_size_t(size))
    finally:
        os.close(descriptor)
    return sum(page & 1 for page in vector)


def _file_system(path: Path) -> str:
    """The type of the file system *path* is on (``/proc/mounts``)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        point, fs_type = line.split()[1:3]
        if str(path.resolve()).startswith(point.rstrip("/") + "/") and len(point) > len(best):
            best, kind = point, fs_type
    return kind

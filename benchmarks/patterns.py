"""Small-read patterns of scientific programs, for the ``transfer`` job (issue 14, part 4).

Each pattern reads a file of its own through a mount and returns the bytes it *asked* for;
the job compares that with the bytes the storage sent for that file (nginx's log). Every
pattern checks what it read, so a mount returning wrong bytes cannot post a figure.

- ``buffered``: Python's ``open()`` with its default buffering (a buffer of ``st_blksize``
  bytes), seek + read of :data:`RECORD` -byte records at random offsets. Asked: the records.
- ``mmap``: ``np.memmap`` of the file as uint64, random element reads. Asked: one 4 KiB
  page per element touched (a page is the least the kernel can map).
- ``hdf5``: h5py reads one column of a chunked 2-D dataset (one chunk in every chunk row).
- ``parquet``: pyarrow reads one column of a Parquet file (every row group's chunk of it).

h5py and pyarrow read through :class:`CountingFile` (an unbuffered file object counting the
bytes returned), so "asked" is exactly what the library requested, as strace would show;
they are optional (the bench extra): without them their columns say so.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data import PatternFile
from benchmarks.measure import Broken

RECORD = 16 * 1024
PAGE = 4096


class CountingFile(io.FileIO):
    """A read-only unbuffered file that counts the bytes its reads return."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "r")
        self.asked = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.asked += len(data or b"")
        return data or b""

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer) or 0
        self.asked += count
        return count

    def readall(self) -> bytes:
        data = super().readall()
        self.asked += len(data)
        return data


# -- reading (through a mount) -----------------------------------------------------------


def buffered(path: Path, file: PatternFile, count: int) -> int:
    """Seek + read *count* records at random offsets with Python's default buffering."""
    rng = random.Random(1401)
    offsets = [rng.randrange(0, file.blob.size - RECORD) for _ in range(count)]
    with path.open("rb") as reader:
        for offset in offsets:
            reader.seek(offset)
            if reader.read(RECORD) != file.blob.content(offset, RECORD):
                raise Broken(f"buffered reads of {file.blob.name} returned the wrong bytes")
    return count * RECORD


def mmap(path: Path, file: PatternFile, count: int) -> int:
    """Read *count* random uint64 elements of ``np.memmap(path)``; asked: their pages."""
    rng = random.Random(1402)
    elements = file.blob.size // 8
    indices = [rng.randrange(0, elements) for _ in range(count)]
    array = np.memmap(path, dtype="<u8", mode="r")
    try:
        for index in indices:
            expected = int.from_bytes(file.blob.content(index * 8, 8), "little")
            if int(array[index]) != expected:
                raise Broken(f"mmap reads of {file.blob.name} returned the wrong bytes")
    finally:
        del array
    return len({index * 8 // PAGE for index in indices}) * PAGE


def hdf5(path: Path, file: PatternFile, count: int) -> int:
    """Read column 0 of dataset ``table`` with h5py."""
    import h5py

    with CountingFile(path) as raw, h5py.File(raw, "r") as hdf:
        column = hdf["table"][:, 0]
        asked = raw.asked
    if not np.array_equal(column, file.expected):
        raise Broken(f"h5py read the wrong values from {file.blob.name}")
    return asked


def parquet(path: Path, file: PatternFile, count: int) -> int:
    """Read column ``c3`` with pyarrow."""
    import pyarrow.parquet as pq

    with CountingFile(path) as raw:
        column = pq.read_table(raw, columns=["c3"]).column("c3").to_numpy()
        asked = raw.asked
    if not np.array_equal(column, file.expected):
        raise Broken(f"pyarrow read the wrong values from {file.blob.name}")
    return asked


READERS: dict[str, Callable[[Path, PatternFile, int], int]] = {
    "buffered": buffered,
    "mmap": mmap,
    "hdf5": hdf5,
    "parquet": parquet,
}
"""The patterns by name, in the order the job runs them."""

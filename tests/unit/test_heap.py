"""``fuse/heap.py`` on this machine's C library: freed heap pages really go back.

The pattern is the one a re-listed directory leaves (docs/reliability.md): many small
allocations freed below a live one, so glibc cannot shrink its heap from the top and keeps
the pages resident until ``malloc_trim``.
"""

from __future__ import annotations

import ctypes
import threading

import pytest

from simvuefs.fuse import heap

MIB = 1 << 20
BLOCK = 4096  # malloc'd by glibc (above pymalloc's 512 B), below the mmap threshold
BLOCKS = 16384  # 64 MiB


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="glibc only")
def test_release_freed_gives_freed_heap_pages_back() -> None:
    freed: list[int] = []

    def churn() -> None:  # a thread of its own, as the daemon's listings come from tasks
        blocks = [ctypes.create_string_buffer(b"x" * (BLOCK - 1), BLOCK) for _ in range(BLOCKS)]
        keeper = ctypes.create_string_buffer(BLOCK)  # above them: the heap cannot shrink
        before = resident_kib()
        del blocks
        after_free = resident_kib()
        heap.release_freed()
        freed.extend((before - after_free, before - resident_kib()))
        del keeper

    thread = threading.Thread(target=churn)
    thread.start()
    thread.join()
    by_free, by_release = freed  # KiB no longer resident
    # free() alone leaves much of the 64 MiB resident; release_freed hands it back.
    assert by_release > by_free + 32 * 1024, freed


def test_limit_arenas_and_release_never_raise() -> None:
    heap.limit_arenas(heap.ARENAS)
    heap.release_freed()

"""``fuse/heap.py`` on this machine's C library: freed heap pages really go back.

The pattern is the one a re-listed directory leaves (docs/reliability.md): many small
allocations freed below a live one, so glibc cannot shrink its heap from the top and keeps
the pages resident until ``malloc_trim``. Measured in a fresh interpreter: in the test
process, earlier tests decide which heap the blocks come from.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

from simvuefs.fuse import heap

CHURN = """
import ctypes, json, threading
from simvuefs.fuse import heap

def resident_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

freed = []
def churn():  # a thread of its own, as the daemon's listings come from tasks
    blocks = [ctypes.create_string_buffer(b"x" * 4095, 4096) for _ in range(16384)]  # 64 MiB
    keeper = ctypes.create_string_buffer(4096)  # above them: the heap cannot shrink
    before = resident_kib()
    del blocks[:]
    after_free = resident_kib()
    heap.release_freed()
    freed.extend((before - after_free, before - resident_kib()))
    del keeper

thread = threading.Thread(target=churn)
thread.start()
thread.join()
print(json.dumps(freed))
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="glibc only")
def test_release_freed_gives_freed_heap_pages_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHURN], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    by_free, by_release = json.loads(out)  # KiB no longer resident
    # free() alone leaves much of the 64 MiB resident; release_freed hands it back.
    assert by_release > by_free + 32 * 1024, (by_free, by_release)


def test_limit_arenas_and_release_never_raise() -> None:
    heap.limit_arenas(heap.ARENAS)
    heap.release_freed()

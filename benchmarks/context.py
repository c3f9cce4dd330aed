"""What every job gets, and what the job modules share: contender names, the prefix that
slow contenders read, size formatting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.data import MIB, Blob, Dataset
from benchmarks.harness import Harness, Mounted, Nginx
from testbed.devserver import DevServer

CURL = "curl (physical limit)"
SLOW_PREFIX = {"httpdirfs": 4 * MIB, "httpdirfs cache": 256 * MIB}
"""Contenders too slow to read whole files in the time budget read only this prefix of the
large file (and as much in all over the parallel readers' files): httpdirfs without --cache
makes one ranged GET per 128 KiB FUSE read, ~1 MiB/s; with --cache it fetches 8 MiB
segments one at a time, ~50 MiB/s."""
HTTPX = "httpx stream"


@dataclass
class Context:
    """What every job gets."""

    harness: Harness
    nginx: Nginx
    devserver: DevServer
    data: Dataset
    repeat: int

    def path(self, mounted: Mounted, blob: Blob) -> Path:
        return mounted.path(blob.run, blob.category, blob.name, blob.sha256)


def prefix(kind: str, size: int) -> int | None:
    """How much of a *size*-byte file contender *kind* reads (None: all of it)."""
    limit = SLOW_PREFIX.get(kind)
    return limit if limit is not None and limit < size else None


def label(contender: str, limit: int | None) -> str:
    return f"{contender} (first {size_text(limit)})" if limit else contender


def size_text(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"

"""What every job gets, and what the job modules share: contender names, the prefix that
slow contenders read, size formatting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.data import MIB, Blob, Dataset
from benchmarks.harness import Harness, Mounted, Nginx, mount_kinds
from benchmarks.profile import Profile
from testbed.devserver import DevServer

CURL = "curl (physical limit)"
"""The loopback profile's reference: one curl stream is what the machine can move."""
CURL_ONE = "curl one stream"
"""The field profile's single curl: one capped connection, not the link's limit."""
RANGED_STREAMS = 8
RANGED = f"curl {RANGED_STREAMS} ranged GETs"
"""Concurrent ranged GETs of equal parts of one file: the link's limit (the field
profile's reference for sequential reads; 8, as in the issue's measurement)."""
SLOW_PREFIX = {"httpdirfs": 4 * MIB, "httpdirfs cache": 256 * MIB}
"""Contenders too slow to read whole files in the time budget read only this prefix of the
large file (and as much in all over the parallel readers' files): httpdirfs without --cache
makes one ranged GET per 128 KiB FUSE read, ~1 MiB/s; with --cache it fetches 8 MiB
segments one at a time, ~50 MiB/s."""
FIELD_SLOW_PREFIX = {CURL_ONE: 256 * MIB, "rclone": 256 * MIB, "rclone full": 256 * MIB}
"""In the field profile, one capped stream moves ~50 MB/s: the single-stream contenders
read this prefix of the large file (their rate is the cap, whatever the length)."""
HTTPX = "httpx stream"


@dataclass
class Context:
    """What every job gets."""

    harness: Harness
    nginx: Nginx
    devserver: DevServer
    data: Dataset
    repeat: int
    profile: Profile

    @property
    def kinds(self) -> tuple[str, ...]:
        """The FUSE contenders of this run's profile."""
        return mount_kinds(self.profile)

    def path(self, mounted: Mounted, blob: Blob) -> Path:
        return mounted.path(blob.run, blob.category, blob.name, blob.sha256)

    def prefix(self, kind: str, size: int, parallel: bool = False) -> int | None:
        """How much of a *size*-byte file contender *kind* reads (None: all of it); in the
        field profile's *parallel* readers, every contender reads everything."""
        if self.profile.field:
            limit = None if parallel else FIELD_SLOW_PREFIX.get(kind)
        else:
            limit = SLOW_PREFIX.get(kind)
        return limit if limit is not None and limit < size else None


def label(contender: str, limit: int | None) -> str:
    return f"{contender} (first {size_text(limit)})" if limit else contender


def size_text(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"

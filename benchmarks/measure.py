"""Samples, results and the small timed operations the jobs are made of.

A :class:`Result` is one table row: a contender's figure over the repeats (the table shows
the median and the spread), and, for daemons we can see, CPU seconds per GiB moved and the
peak RSS (VmHWM) of the process serving the mount.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.data import GIB, MIB, Blob
from benchmarks.harness import ContenderFailed, Mounted, redact

READ_CHUNK = 4 * MIB


class Broken(ContenderFailed):
    """A contender returned wrong bytes or failed: its figures would be meaningless."""


TOLERATED = (ContenderFailed, OSError, subprocess.CalledProcessError)
"""How a contender fails: its own error, a dead mount (ENOTCONN), a tool's exit status."""


@contextlib.contextmanager
def tolerated(table: Table, kind: str, *names: str) -> Iterator[None]:
    """Record a failure of contender *kind* in rows *names* and go on with the next one;
    simvuefs failing stops the run (its figures are the point). What the failed attempt
    recorded is dropped: a round whose bytes could not be verified posts no figure."""
    before = {name: table.result(name).sizes() for name in names}
    try:
        yield
    except TOLERATED as exc:
        if kind == "simvuefs":
            raise
        for name in names:
            table.result(name).truncate(before[name])
            table.result(name).failures.append(redact(str(exc))[:300])
        print(f"{kind} failed: {redact(str(exc))[:300]}", file=sys.stderr, flush=True)


@dataclass
class Result:
    """One contender's samples in one job."""

    contender: str
    values: list[float] = field(default_factory=list)
    cpu_per_gib: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def sizes(self) -> tuple[int, int, int]:
        return len(self.values), len(self.cpu_per_gib), len(self.peak_rss)

    def truncate(self, sizes: tuple[int, int, int]) -> None:
        """Drop the samples recorded since :meth:`sizes` returned *sizes*."""
        del self.values[sizes[0] :], self.cpu_per_gib[sizes[1] :], self.peak_rss[sizes[2] :]

    def add(self, value: float, cpu: float | None = None, nbytes: int = 0, rss: int = 0) -> None:
        """Record one sample; *cpu* seconds for *nbytes* moved become CPU-s/GiB."""
        self.values.append(value)
        if cpu is not None and nbytes:
            self.cpu_per_gib.append(cpu / (nbytes / GIB))
        if rss:
            self.peak_rss.append(rss)


@dataclass
class Table:
    """One job's results: *unit* is "MiB/s", "ms" or ends with "bytes"; ratios are to
    *reference* (None: no ratio column)."""

    job: str
    title: str
    unit: str
    reference: str | None
    results: dict[str, Result] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)

    def result(self, contender: str) -> Result:
        return self.results.setdefault(contender, Result(contender))


def timed_on(
    mounted: Mounted | None, function: Callable[..., object], *args: Any, **kwargs: Any
) -> tuple[float, float | None]:
    """Call *function(*args)*; return (wall seconds, CPU seconds of the mount's daemon or
    None)."""
    cpu = mounted.cpu() if mounted else 0.0
    start = time.perf_counter()
    function(*args, **kwargs)
    seconds = time.perf_counter() - start
    return seconds, (mounted.cpu() - cpu if mounted else None)


def drop_page_cache(path: Path) -> None:
    """Evict *path*'s pages from the kernel's page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def dd_command(path: Path, limit: int | None = None) -> list[str]:
    """``dd bs=1M`` of *path* (or of its first *limit* bytes) to /dev/null."""
    count = ["iflag=count_bytes", f"count={limit}"] if limit else []
    return ["dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none", *count]


def dd(path: Path, limit: int | None = None) -> None:
    """Read *path* (or its first *limit* bytes) with ``dd bs=1M``."""
    subprocess.run(dd_command(path, limit), check=True)


def curl_to_null(url: str, expected: int, limit: int | None = None) -> None:
    """Download *url* (or its first *limit* bytes) with curl into /dev/null; it must be
    *expected* bytes."""
    ranged = ["-r", f"0-{limit - 1}"] if limit else []
    result = subprocess.run(
        ["curl", "-sS", "--fail", *ranged, "-o", "/dev/null", "-w", "%{size_download}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    if int(result.stdout) != expected:
        raise Broken(f"curl got {result.stdout} bytes of {expected}")


def httpx_stream(url: str, expected: int) -> None:
    """Download *url* with one plain httpx stream (``iter_raw``); it must be *expected* bytes."""
    total = 0
    with (
        httpx.Client(timeout=60) as client,
        client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_raw(READ_CHUNK):
            total += len(chunk)
    if total != expected:
        raise Broken(f"httpx got {total} bytes of {expected}")


def verify_file(path: Path, blob: Blob, contender: str, limit: int | None = None) -> None:
    """Check that *path* holds *blob*'s bytes (sha256), or its first *limit* bytes."""
    if limit is not None:
        with path.open("rb") as file:
            if file.read(limit) != blob.content(0, limit):
                raise Broken(f"{contender}: {blob.name} read back with the wrong content")
        return
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(READ_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != blob.sha256:
        raise Broken(f"{contender}: {blob.name} read back with the wrong content")


def verify_url(url: str, blob: Blob, contender: str) -> None:
    """Check that *url* serves *blob*'s bytes (sha256)."""
    digest = hashlib.sha256()
    with httpx.Client(timeout=60) as client, client.stream("GET", url) as response:
        for chunk in response.iter_raw(READ_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != blob.sha256:
        raise Broken(f"{contender}: {blob.name} downloaded with the wrong content")


def mib_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MIB / seconds


def run_all(commands: list[list[str]]) -> None:
    """Start all *commands* at once and wait for them; any failure is :class:`Broken`."""
    processes = [subprocess.Popen(c, stdin=subprocess.DEVNULL) for c in commands]
    codes = [p.wait() for p in processes]
    if any(codes):
        raise Broken(f"{commands[0][0]}: exit statuses {codes}")

"""The transfer job: bytes the storage sent for small reads, against the bytes asked for.

``head -c 4096`` of the large file, random 4 KiB ``pread``s of it (bytes per read, and the
latency of each), and the small-read patterns of :mod:`benchmarks.patterns`, every
contender on fresh mounts; bytes come from nginx's access log, counted after unmounting
so that cancelled read-ahead is included. Every read is checked against the expected
bytes (:class:`~benchmarks.measure.Broken` otherwise).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time

import httpx

from benchmarks import patterns
from benchmarks.context import CURL, Context, size_text
from benchmarks.data import Blob
from benchmarks.harness import Mounted, Nginx
from benchmarks.measure import Broken, Result, Table, tolerated

GET_4K = "httpx 4 KiB ranged GETs (open connection)"
"""The random reads' latency reference: what one ranged GET costs on a warm connection."""
CURL_HEAD = "curl ranged GET of 4096 bytes"
HEAD = "head -c 4096: bytes"
LATENCY = ["random: median ms", "random: p90 ms"]


def pattern_column(pattern: str) -> str:
    return f"{pattern}: sent/asked"


def transfer(ctx: Context) -> Table:
    """Bytes transferred from nginx (its access log) for head -c 4096 of the large file, per
    read and latency of random 4 KiB reads of it, and bytes sent against bytes asked for by
    the small-read patterns (buffered reader, mmap, h5py, pyarrow: benchmarks.patterns),
    each file read once; head and patterns on one fresh mount, random reads on another
    (counted after unmounting, so cancelled read-ahead is included)."""
    blob = ctx.data.large
    count = ctx.data.sizes.random_reads
    title = (
        f"Bytes transferred: head -c 4096 and {count} random 4 KiB reads of "
        f"{size_text(blob.size)}; small-read patterns"
    )
    curl = CURL_HEAD if ctx.profile.field else CURL
    table = Table("transfer", title, HEAD, curl)
    table.extra_columns = [
        "requests (head)",
        "random: bytes per read",
        "random: requests",
        *LATENCY,
        *(pattern_column(p) for p in patterns.READERS),
    ]
    rng = random.Random(20261123)
    offsets = [rng.randrange(0, blob.size - 4096) for _ in range(count)]
    mark = ctx.nginx.log_mark()
    head = subprocess.run(
        ["curl", "-sS", "--fail", "-r", "0-4095", ctx.nginx.url(blob.sha256)],
        capture_output=True,
        check=True,
    ).stdout
    if head != blob.content(0, 4096):
        raise Broken("curl: wrong bytes for a ranged GET")
    requests, sent = ctx.nginx.bytes_sent(mark, blob.sha256)
    _transfer_row(table, curl, (sent, requests), (4096 * count, count), count)
    latencies = _ranged_get_latencies(ctx.nginx, blob, offsets)
    _latency_notes(table.result(GET_4K), latencies).add(4096)
    for kind in ctx.kinds:
        with tolerated(table, kind, kind):
            _transfer(ctx, table, kind, offsets)
    return table


def _ranged_get_latencies(nginx: Nginx, blob: Blob, offsets: list[int]) -> list[float]:
    """Milliseconds of 4 KiB ranged GETs at *offsets* on one open connection."""
    times = []
    with httpx.Client(timeout=30) as client:
        client.get(nginx.url(blob.sha256), headers={"Range": "bytes=0-0"}).raise_for_status()
        for offset in offsets:
            start = time.perf_counter()
            response = client.get(
                nginx.url(blob.sha256), headers={"Range": f"bytes={offset}-{offset + 4095}"}
            )
            times.append((time.perf_counter() - start) * 1000)
            if response.content != blob.content(offset, 4096):
                raise Broken("httpx: wrong bytes for a ranged GET")
    return times


def _latency_notes(result: Result, times: list[float]) -> Result:
    """Put the median and 90th percentile of *times* (ms) in *result*'s notes."""
    p90 = statistics.quantiles(times, n=10)[8] if len(times) > 1 else times[0]
    result.notes[LATENCY[0]] = f"{statistics.median(times):.1f}"
    result.notes[LATENCY[1]] = f"{p90:.1f}"
    return result


def _transfer(ctx: Context, table: Table, kind: str, offsets: list[int]) -> None:
    """One contender's row: head -c 4096 and the patterns on a fresh mount, then the random
    reads on another."""
    blob = ctx.data.large
    count = len(offsets)
    mark = ctx.nginx.log_mark()
    with ctx.harness.mount(kind) as mounted:
        path = ctx.path(mounted, blob)
        head = subprocess.run(["head", "-c", "4096", str(path)], capture_output=True).stdout
        if head != blob.content(0, 4096):
            raise Broken(f"{kind}: head -c 4096 read the wrong bytes")
        asked = _run_patterns(ctx, mounted)
        rss = mounted.peak_rss()
    requests, sent = ctx.nginx.bytes_sent(mark, blob.sha256)
    ratios = {}
    for pattern, wanted in asked.items():
        _, moved = ctx.nginx.bytes_sent(mark, ctx.data.patterns[pattern].blob.sha256)
        ratios[pattern] = f"{moved / wanted:.2f} ({size_text(moved)} / {size_text(wanted)})"
    mark = ctx.nginx.log_mark()
    times = []
    with ctx.harness.mount(kind) as mounted:
        path = ctx.path(mounted, blob)
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset in offsets:
                start = time.perf_counter()
                data = os.pread(fd, 4096, offset)
                times.append((time.perf_counter() - start) * 1000)
                if data != blob.content(offset, 4096):
                    raise Broken(f"{kind}: a random 4 KiB read returned the wrong bytes")
        finally:
            os.close(fd)
    random_requests, random_sent = ctx.nginx.bytes_sent(mark, blob.sha256)
    _transfer_row(table, kind, (sent, requests), (random_sent, random_requests), count, rss)
    result = _latency_notes(table.result(kind), times)
    result.notes.update({pattern_column(p): ratio for p, ratio in ratios.items()})


def _run_patterns(ctx: Context, mounted: Mounted) -> dict[str, int]:
    """Run every pattern whose file exists on *mounted*; return the bytes each asked for."""
    sizes = ctx.data.sizes
    counts = {"buffered": sizes.record_reads, "mmap": sizes.mmap_reads}
    asked = {}
    for pattern, file in ctx.data.patterns.items():
        read = patterns.READERS[pattern]
        asked[pattern] = read(ctx.path(mounted, file.blob), file, counts.get(pattern, 0))
    return asked


def _transfer_row(
    table: Table,
    contender: str,
    head: tuple[int, int],
    random_reads: tuple[int, int],
    count: int,
    rss: int = 0,
) -> None:
    """Add a row from (bytes, requests) of the head and of the *count* random reads."""
    result = table.result(contender)
    result.add(head[0], rss=rss)
    result.notes["requests (head)"] = str(head[1])
    result.notes["random: bytes per read"] = size_text(random_reads[0] // count)
    result.notes["random: requests"] = str(random_reads[1])

"""Read jobs: sequential, first-byte latency, bytes transferred, parallel readers, memory.

Each job runs its contenders interleaved (contender A, B, C, then A, B, C again ...) for
``--repeat`` rounds, every FUSE contender on a fresh mount (empty caches), and returns one
:class:`~benchmarks.measure.Table`. Every contender's bytes are checked once per job (sha256
of a whole file, or the expected bytes of a small read), so a broken mount cannot post a
fast figure: :class:`~benchmarks.measure.Broken` stops the run.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.context import CURL, HTTPX, Context, label, prefix, size_text
from benchmarks.data import Blob
from benchmarks.harness import MOUNT_KINDS
from benchmarks.measure import (
    Broken,
    Table,
    curl_to_null,
    dd,
    dd_command,
    drop_page_cache,
    httpx_stream,
    mib_per_s,
    run_all,
    timed_on,
    tolerated,
    verify_file,
    verify_url,
)


def sequential(ctx: Context) -> Table:
    """Sequential read of the large artifact with dd bs=1M: cold (fresh mount, page cache
    dropped) and warm (re-read right after), against curl and a plain httpx stream."""
    blob = ctx.data.large
    table = Table("sequential", f"Sequential read of a {size_text(blob.size)} file", "MiB/s", CURL)
    url = ctx.nginx.url(blob.sha256)
    for round_ in range(ctx.repeat):
        seconds, _ = timed_on(None, curl_to_null, url, blob.size)
        table.result(CURL).add(mib_per_s(blob.size, seconds))
        seconds, _ = timed_on(None, httpx_stream, url, blob.size)
        table.result(HTTPX).add(mib_per_s(blob.size, seconds))
        if round_ == 0:
            verify_url(url, blob, HTTPX)
        for kind in MOUNT_KINDS:
            limit = prefix(kind, blob.size)
            nbytes = limit or blob.size
            names = [label(f"{kind} {phase}", limit) for phase in ("cold", "warm")]
            with tolerated(table, kind, *names), ctx.harness.mount(kind) as mounted:
                path = ctx.path(mounted, blob)
                drop_page_cache(path)
                for name in names:
                    seconds, cpu = timed_on(mounted, dd, path, limit)
                    table.result(name).add(
                        mib_per_s(nbytes, seconds), cpu, nbytes, mounted.peak_rss()
                    )
                if round_ == 0:
                    verify_file(path, blob, kind, limit)
    return table


def ttfb(ctx: Context) -> Table:
    """Time to first byte: open() + read(1 byte) of never-read files on a fresh mount (their
    directory listed first), median over the files, against a ranged GET (bytes=0-0) on a
    fresh connection by curl (time_starttransfer) and by httpx in this process; with the
    API requests simvuefs made per file."""
    blobs = ctx.data.ttfb
    table = Table(
        "ttfb", f"Time to first byte of a cold {size_text(blobs[0].size)} file", "ms", CURL
    )
    table.extra_columns = ["API requests per file"]
    for _ in range(ctx.repeat):
        table.result(CURL).add(
            statistics.median(_curl_ttfb(ctx.nginx.url(b.sha256)) for b in blobs)
        )
        table.result("httpx ranged GET").add(
            statistics.median(_httpx_ttfb(ctx.nginx.url(b.sha256)) for b in blobs)
        )
        for kind in MOUNT_KINDS:
            with tolerated(table, kind, kind), ctx.harness.mount(kind) as mounted:
                os.listdir(ctx.path(mounted, blobs[0]).parent)
                ctx.devserver.reset_stats()
                times = [_mount_ttfb(ctx.path(mounted, b), b, kind) for b in blobs]
                result = table.result(kind)
                result.add(statistics.median(times), rss=mounted.peak_rss())
                if kind == "simvuefs":
                    requests = sum(ctx.devserver.stats()["api_requests"].values()) / len(blobs)
                    result.notes["API requests per file"] = f"{requests:.1f}"
    return table


def _curl_ttfb(url: str) -> float:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-r",
            "0-0",
            "-o",
            "/dev/null",
            "-w",
            "%{time_starttransfer}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout) * 1000


def _httpx_ttfb(url: str) -> float:
    with httpx.Client(timeout=30) as client:
        start = time.perf_counter()
        response = client.get(url, headers={"Range": "bytes=0-0"})
        elapsed = time.perf_counter() - start
    if response.status_code != 206 or len(response.content) != 1:
        raise Broken(f"ranged GET answered {response.status_code}")
    return elapsed * 1000


def _mount_ttfb(path: Path, blob: Blob, contender: str) -> float:
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        first = os.read(fd, 1)
    finally:
        elapsed = time.perf_counter() - start
        os.close(fd)
    if first != blob.content(0, 1):
        raise Broken(f"{contender}: wrong first byte of {blob.name}")
    return elapsed * 1000


def transfer(ctx: Context) -> Table:
    """Bytes transferred from nginx (its access log) for head -c 4096 of the large file, and
    per read for random 4 KiB reads of it, each on a fresh mount (counted after unmounting,
    so cancelled read-ahead is included)."""
    blob = ctx.data.large
    count = ctx.data.sizes.random_reads
    title = (
        f"Bytes transferred: head -c 4096 and {count} random 4 KiB reads of {size_text(blob.size)}"
    )
    table = Table("transfer", title, "head -c 4096: bytes", CURL)
    table.extra_columns = ["requests (head)", "random: bytes per read", "random: requests"]
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
    _transfer_row(table, CURL, (sent, requests), (4096 * count, count), count)
    for kind in MOUNT_KINDS:
        with tolerated(table, kind, kind):
            _transfer(ctx, table, kind, offsets)
    return table


def _transfer(ctx: Context, table: Table, kind: str, offsets: list[int]) -> None:
    """One contender's row: head -c 4096, then the random reads, each on a fresh mount."""
    blob = ctx.data.large
    count = len(offsets)
    mark = ctx.nginx.log_mark()
    with ctx.harness.mount(kind) as mounted:
        path = ctx.path(mounted, blob)
        head = subprocess.run(["head", "-c", "4096", str(path)], capture_output=True).stdout
        if head != blob.content(0, 4096):
            raise Broken(f"{kind}: head -c 4096 read the wrong bytes")
        rss = mounted.peak_rss()
    requests, sent = ctx.nginx.bytes_sent(mark, blob.sha256)
    mark = ctx.nginx.log_mark()
    with ctx.harness.mount(kind) as mounted:
        path = ctx.path(mounted, blob)
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset in offsets:
                if os.pread(fd, 4096, offset) != blob.content(offset, 4096):
                    raise Broken(f"{kind}: a random 4 KiB read returned the wrong bytes")
        finally:
            os.close(fd)
    random_requests, random_sent = ctx.nginx.bytes_sent(mark, blob.sha256)
    _transfer_row(table, kind, (sent, requests), (random_sent, random_requests), count, rss)


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


def parallel(ctx: Context) -> Table:
    """N parallel readers (dd bs=1M) of N different files on one fresh mount, aggregate
    MiB/s, against N parallel curls."""
    blobs = ctx.data.readers[: ctx.data.sizes.readers]
    total = sum(b.size for b in blobs)
    title = f"{len(blobs)} parallel readers of {size_text(blobs[0].size)} files"
    table = Table("parallel", title, "MiB/s", CURL)
    for round_ in range(ctx.repeat):
        urls = [ctx.nginx.url(b.sha256) for b in blobs]
        seconds, _ = timed_on(None, run_all, [["curl", "-sSf", "-o", "/dev/null", u] for u in urls])
        table.result(CURL).add(mib_per_s(total, seconds))
        for kind in MOUNT_KINDS:
            limit = prefix(kind, total)
            limit = limit // len(blobs) if limit else None
            nbytes = limit * len(blobs) if limit else total
            name = label(kind, limit)
            with tolerated(table, kind, name), ctx.harness.mount(kind) as mounted:
                paths = [ctx.path(mounted, b) for b in blobs]
                commands = [dd_command(p, limit) for p in paths]
                seconds, cpu = timed_on(mounted, run_all, commands)
                table.result(name).add(mib_per_s(nbytes, seconds), cpu, nbytes, mounted.peak_rss())
                if round_ == 0:
                    verify_file(paths[-1], blobs[-1], kind, limit)
    return table


def memory(ctx: Context) -> Table:
    """simvuefs only, one round: N parallel readers each reading K files in turn (N x K
    files in all, e.g. 16 x 4 x 64 MiB = 4 GiB) on a fresh mount: aggregate MiB/s and the
    daemon's peak RSS (the target: < 250 MiB)."""
    sizes = ctx.data.sizes
    blobs = ctx.data.readers
    total = sum(b.size for b in blobs)
    title = f"simvuefs memory: {sizes.readers} readers streaming {size_text(total)} in all"
    table = Table("memory", title, "MiB/s", None)
    with ctx.harness.mount("simvuefs") as mounted:
        groups = [blobs[i :: sizes.readers] for i in range(sizes.readers)]
        script = 'for f do dd if="$f" of=/dev/null bs=1M status=none || exit 1; done'
        commands = [
            ["sh", "-c", script, "sh", *(str(ctx.path(mounted, b)) for b in g)] for g in groups
        ]
        seconds, cpu = timed_on(mounted, run_all, commands)
        table.result("simvuefs").add(mib_per_s(total, seconds), cpu, total, mounted.peak_rss())
        verify_file(ctx.path(mounted, blobs[0]), blobs[0], "simvuefs")
    return table

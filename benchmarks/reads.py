"""Read jobs: sequential, first-byte latency, parallel readers, memory (the transfer job is
:mod:`benchmarks.transfer`).

Each job runs its contenders interleaved (contender A, B, C, then A, B, C again ...) for
``--repeat`` rounds, every FUSE contender on a fresh mount (empty caches), and returns one
:class:`~benchmarks.measure.Table`. Every contender's bytes are checked once per job (sha256
of a whole file, or the expected bytes of a small read), so a broken mount cannot post a
fast figure: :class:`~benchmarks.measure.Broken` stops the run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.context import (
    CURL,
    CURL_ONE,
    HTTPX,
    RANGED,
    RANGED_STREAMS,
    Context,
    label,
    size_text,
)
from benchmarks.data import Blob
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

CURL_TTFB = "curl ranged GET (new connection)"


def sequential(ctx: Context) -> Table:
    """Sequential read of the large artifact with dd bs=1M: cold (fresh mount, page cache
    dropped) and, on loopback, warm (re-read right after), against curl (one stream, and
    concurrent ranged GETs of equal parts) and, on loopback, a plain httpx stream."""
    blob = ctx.data.large
    field = ctx.profile.field
    one = CURL_ONE if field else CURL
    title = f"Sequential read of a {size_text(blob.size)} file"
    table = Table("sequential", title, "MiB/s", RANGED if field else CURL)
    url = ctx.nginx.url(blob.sha256)
    phases = ("cold",) if field else ("cold", "warm")
    for round_ in range(ctx.repeat):
        limit = ctx.prefix(one, blob.size)
        seconds, _ = timed_on(None, curl_to_null, url, limit or blob.size, limit)
        table.result(label(one, limit)).add(mib_per_s(limit or blob.size, seconds))
        seconds, _ = timed_on(None, run_all, ranged_curls(url, blob.size, RANGED_STREAMS))
        table.result(RANGED).add(mib_per_s(blob.size, seconds))
        if not field:
            seconds, _ = timed_on(None, httpx_stream, url, blob.size)
            table.result(HTTPX).add(mib_per_s(blob.size, seconds))
        if round_ == 0:
            verify_url(url, blob, "nginx")
        for kind in ctx.kinds:
            limit = ctx.prefix(kind, blob.size)
            nbytes = limit or blob.size
            names = [label(f"{kind} {phase}", limit) for phase in phases]
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


def ranged_curls(url: str, size: int, streams: int) -> list[list[str]]:
    """Commands of *streams* curls, each getting one equal part of *url* (*size* bytes)."""
    bounds = [size * i // streams for i in range(streams + 1)]
    return [
        ["curl", "-sSf", "-o", "/dev/null", "-r", f"{start}-{end - 1}", url]
        for start, end in zip(bounds, bounds[1:], strict=False)
    ]


def ttfb(ctx: Context) -> Table:
    """Time to first byte: open() + read(1 byte) of never-read files on a fresh mount (their
    directory listed first), median over the files, against a ranged GET (bytes=0-0) on a
    fresh connection by curl (time_starttransfer) and by httpx in this process; with the
    API requests simvuefs made per file."""
    blobs = ctx.data.ttfb
    curl = CURL_TTFB if ctx.profile.field else CURL
    title = f"Time to first byte of a cold {size_text(blobs[0].size)} file"
    table = Table("ttfb", title, "ms", curl)
    table.extra_columns = ["API requests per file"]
    for _ in range(ctx.repeat):
        table.result(curl).add(
            statistics.median(_curl_ttfb(ctx.nginx.url(b.sha256)) for b in blobs)
        )
        table.result("httpx ranged GET").add(
            statistics.median(_httpx_ttfb(ctx.nginx.url(b.sha256)) for b in blobs)
        )
        for kind in ctx.kinds:
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


def parallel(ctx: Context) -> Table:
    """N parallel readers (dd bs=1M) of N different files on one fresh mount, aggregate
    MiB/s, against N parallel curls."""
    blobs = ctx.data.readers[: ctx.data.sizes.readers]
    total = sum(b.size for b in blobs)
    title = f"{len(blobs)} parallel readers of {size_text(blobs[0].size)} files"
    curls = f"{len(blobs)} curls" if ctx.profile.field else CURL
    table = Table("parallel", title, "MiB/s", curls)
    for round_ in range(ctx.repeat):
        urls = [ctx.nginx.url(b.sha256) for b in blobs]
        seconds, _ = timed_on(None, run_all, [["curl", "-sSf", "-o", "/dev/null", u] for u in urls])
        table.result(curls).add(mib_per_s(total, seconds))
        for kind in ctx.kinds:
            limit = ctx.prefix(kind, total, parallel=True)
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

"""Content cache jobs (``--cache-dir``, issue 16): disk-warm reads after a remount, and a
cluster of mounts sharing one cache directory.

- ``disk_warm``: read the large file once (filling the cache on disk), unmount, drop the
  page cache, mount again with the same cache directory and read it again: simvuefs with
  ``--cache-dir``, rclone with ``--vfs-cache-mode full`` and the same ``--cache-dir``; with
  the storage bytes (nginx's log) of the second read.
- ``cluster``: four simvuefs mounts (four daemons, as four nodes would be) sharing one fresh
  cache directory, one reader of the large file on each at once: aggregate MiB/s and the
  bytes storage sent; the same without a cache for comparison.

Both use only the harness's nginx and devserver, so they run in every profile.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from pathlib import Path

from benchmarks.context import Context, size_text
from benchmarks.measure import (
    Broken,
    Table,
    dd,
    drop_page_cache,
    mib_per_s,
    timed_on,
    tolerated,
    verify_file,
)

CLUSTER_MOUNTS = 4
NO_CACHE = "simvuefs cold, no --cache-dir"
"""The same cold read without the content cache, in the same round: what the cache costs."""


def disk_warm(ctx: Context) -> Table:
    """Sequential read (dd bs=1M) of the large file after a remount with a warm cache on
    disk: simvuefs --cache-dir and rclone --vfs-cache-mode full, and simvuefs cold (with
    and, just before, without the cache: its cost to a cold read)."""
    blob = ctx.data.large
    title = f"Disk-warm read of a {size_text(blob.size)} file after a remount"
    table = Table("disk_warm", title, "MiB/s", "simvuefs cold")
    table.extra_columns = ["storage bytes (warm read)"]
    for round_ in range(ctx.repeat):
        with tolerated(table, "simvuefs", NO_CACHE), ctx.harness.mount("simvuefs") as mounted:
            path = ctx.path(mounted, blob)
            drop_page_cache(path)
            seconds, cpu = timed_on(mounted, dd, path)
            table.result(NO_CACHE).add(mib_per_s(blob.size, seconds), cpu, blob.size)
        for kind in ("simvuefs", "rclone full"):
            cache = ctx.harness.workdir / "disk-cache" / f"{kind.replace(' ', '-')}-{round_}"
            cache.mkdir(parents=True)
            cold, warm = f"{kind} cold", f"{kind} disk-warm"
            try:
                with tolerated(table, kind, cold, warm):
                    with ctx.harness.mount(kind, disk_cache=cache) as mounted:
                        path = ctx.path(mounted, blob)
                        drop_page_cache(path)
                        seconds, cpu = timed_on(mounted, dd, path)
                        table.result(cold).add(mib_per_s(blob.size, seconds), cpu, blob.size)
                    with ctx.harness.mount(kind, disk_cache=cache) as mounted:
                        path = ctx.path(mounted, blob)
                        drop_page_cache(path)
                        mark = ctx.nginx.log_mark()
                        seconds, cpu = timed_on(mounted, dd, path)
                        _, sent = ctx.nginx.bytes_sent(mark, blob.sha256)
                        result = table.result(warm)
                        result.add(
                            mib_per_s(blob.size, seconds), cpu, blob.size, mounted.peak_rss()
                        )
                        result.notes["storage bytes (warm read)"] = str(sent)
                        if round_ == 0:
                            verify_file(path, blob, kind)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    return table


def cluster(ctx: Context) -> Table:
    """Four mounts sharing one cache directory, one reader of the large file on each at
    once: aggregate MiB/s and storage bytes; the same four mounts without a cache."""
    blob = ctx.data.large
    title = (
        f"{CLUSTER_MOUNTS} mounts (daemons) sharing one --cache-dir, a reader of one "
        f"{size_text(blob.size)} file on each"
    )
    table = Table("cluster", title, "MiB/s", "no cache")
    table.extra_columns = ["storage bytes", "x the file"]
    total = CLUSTER_MOUNTS * blob.size
    for round_ in range(ctx.repeat):
        for name, shared in (("no cache", False), ("shared --cache-dir", True)):
            cache = ctx.harness.workdir / "disk-cache" / f"cluster-{round_}"
            cache.mkdir(parents=True, exist_ok=True)
            try:
                with contextlib.ExitStack() as stack:
                    mounts = [
                        stack.enter_context(
                            ctx.harness.mount("simvuefs", disk_cache=cache if shared else None)
                        )
                        for _ in range(CLUSTER_MOUNTS)
                    ]
                    mark = ctx.nginx.log_mark()
                    seconds, _ = timed_on(None, _read_all, [ctx.path(m, blob) for m in mounts])
                    _, sent = ctx.nginx.bytes_sent(mark, blob.sha256)
                    result = table.result(name)
                    result.add(mib_per_s(total, seconds))
                    result.notes["storage bytes"] = str(sent)
                    result.notes["x the file"] = f"{sent / blob.size:.2f}"
                    if round_ == 0:
                        for mounted in mounts:
                            verify_file(ctx.path(mounted, blob), blob, f"simvuefs {name}")
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    return table


def _read_all(paths: list[Path]) -> None:
    """dd every path at once, one thread each; Broken if one fails."""
    failures: list[str] = []

    def read(path: Path) -> None:
        try:
            dd(path)
        except Exception as exc:  # reported below, the others still run
            failures.append(str(exc))

    threads = [threading.Thread(target=read, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise Broken(f"a cluster reader failed: {failures[0]}")

"""The jobs: scaled-down versions of mountpoint-s3's benchmark jobs.

Each job runs its contenders interleaved (contender A, B, C, then A, B, C again ...) for
``--repeat`` rounds, every FUSE contender on a fresh mount (empty caches), and returns one
:class:`~benchmarks.measure.Table`. Every contender's bytes are checked once per job (sha256
of a whole file, or the expected bytes of a small read), so a broken mount cannot post a
fast figure: :class:`~benchmarks.measure.Broken` stops the run.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.data import BIG_RUN, MIB, UPLOAD_RUN, Blob, Dataset
from benchmarks.harness import MOUNT_KINDS, DevServer, Harness, Mounted, Nginx
from benchmarks.measure import (
    Broken,
    Table,
    curl_to_null,
    dd,
    dd_command,
    drop_page_cache,
    httpx_stream,
    mib_per_s,
    timed_on,
    verify_file,
    verify_url,
)

CURL = "curl (physical limit)"
SLOW_PREFIX = {"httpdirfs": 4 * MIB, "httpdirfs cache": 256 * MIB}
"""Contenders too slow to read whole files in the time budget read only this prefix of the
large file (and as much in all over the parallel readers' files): httpdirfs without --cache
makes one ranged GET per 128 KiB FUSE read, ~1 MiB/s; with --cache it fetches 8 MiB
segments one at a time, ~50 MiB/s."""
HTTPX = "httpx stream"
HTTPX_UPLOAD = "httpx direct upload"
API_WALK = "httpx API walk"
API_PAGE = 100
"""Runs per page in the API walk (the most the devserver gives, as simvuefs asks)."""


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


Job = Callable[[Context], Table]
JOBS: dict[str, Job] = {}


def job(function: Job) -> Job:
    """Register *function* under its name (its docstring is its ``--list`` line)."""
    JOBS[function.__name__] = function
    return function


@job
def sequential(ctx: Context) -> Table:
    """Sequential read of the large artifact with dd bs=1M: cold (fresh mount, page cache
    dropped) and warm (re-read right after), against curl and a plain httpx stream."""
    blob = ctx.data.large
    table = Table("sequential", f"Sequential read of a {_size(blob.size)} file", "MiB/s", CURL)
    url = ctx.nginx.url(blob.sha256)
    for round_ in range(ctx.repeat):
        seconds, _ = timed_on(None, curl_to_null, url, blob.size)
        table.result(CURL).add(mib_per_s(blob.size, seconds))
        seconds, _ = timed_on(None, httpx_stream, url, blob.size)
        table.result(HTTPX).add(mib_per_s(blob.size, seconds))
        if round_ == 0:
            verify_url(url, blob, HTTPX)
        for kind in MOUNT_KINDS:
            limit = _prefix(kind, blob.size)
            nbytes = limit or blob.size
            with ctx.harness.mount(kind) as mounted:
                path = ctx.path(mounted, blob)
                drop_page_cache(path)
                for phase in ("cold", "warm"):
                    seconds, cpu = timed_on(mounted, dd, path, limit)
                    table.result(_label(f"{kind} {phase}", limit)).add(
                        mib_per_s(nbytes, seconds), cpu, nbytes, mounted.peak_rss()
                    )
                if round_ == 0:
                    verify_file(path, blob, kind, limit)
    return table


@job
def ttfb(ctx: Context) -> Table:
    """Time to first byte: open() + read(1 byte) of never-read files on a fresh mount (their
    directory listed first), median over the files, against a ranged GET (bytes=0-0) on a
    fresh connection by curl (time_starttransfer) and by httpx in this process."""
    blobs = ctx.data.ttfb
    table = Table("ttfb", "Time to first byte of a cold file", "ms", CURL)
    for _ in range(ctx.repeat):
        table.result(CURL).add(
            statistics.median(_curl_ttfb(ctx.nginx.url(b.sha256)) for b in blobs)
        )
        table.result("httpx ranged GET").add(
            statistics.median(_httpx_ttfb(ctx.nginx.url(b.sha256)) for b in blobs)
        )
        for kind in MOUNT_KINDS:
            with ctx.harness.mount(kind) as mounted:
                os.listdir(ctx.path(mounted, blobs[0]).parent)
                times = [_mount_ttfb(ctx.path(mounted, b), b, kind) for b in blobs]
                table.result(kind).add(statistics.median(times), rss=mounted.peak_rss())
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


@job
def transfer(ctx: Context) -> Table:
    """Bytes transferred from nginx (its access log) for head -c 4096 of the large file, and
    per read for random 4 KiB reads of it, each on a fresh mount (counted after unmounting,
    so cancelled read-ahead is included)."""
    blob = ctx.data.large
    count = ctx.data.sizes.random_reads
    title = f"Bytes transferred: head -c 4096 and {count} random 4 KiB reads of {_size(blob.size)}"
    table = Table("transfer", title, "head -c 4096: bytes", CURL)
    table.extra_columns = ["requests (head)", "random: bytes per read"]
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
    _transfer_row(table, CURL, sent, requests, 4096)
    for kind in MOUNT_KINDS:
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
        _, random_sent = ctx.nginx.bytes_sent(mark, blob.sha256)
        _transfer_row(table, kind, sent, requests, random_sent // count, rss)
    return table


def _transfer_row(
    table: Table, contender: str, head: int, requests: int, per_read: int, rss: int = 0
) -> None:
    result = table.result(contender)
    result.add(head, rss=rss)
    result.notes["requests (head)"] = str(requests)
    result.notes["random: bytes per read"] = _bytes(per_read)


@job
def parallel(ctx: Context) -> Table:
    """N parallel readers (dd bs=1M) of N different files on one fresh mount, aggregate
    MiB/s, against N parallel curls."""
    blobs = ctx.data.readers[: ctx.data.sizes.readers]
    total = sum(b.size for b in blobs)
    title = f"{len(blobs)} parallel readers of {_size(blobs[0].size)} files"
    table = Table("parallel", title, "MiB/s", CURL)
    for round_ in range(ctx.repeat):
        urls = [ctx.nginx.url(b.sha256) for b in blobs]
        seconds, _ = timed_on(
            None, _run_all, [["curl", "-sSf", "-o", "/dev/null", u] for u in urls]
        )
        table.result(CURL).add(mib_per_s(total, seconds))
        for kind in MOUNT_KINDS:
            limit = _prefix(kind, total)
            limit = limit // len(blobs) if limit else None
            nbytes = limit * len(blobs) if limit else total
            with ctx.harness.mount(kind) as mounted:
                paths = [ctx.path(mounted, b) for b in blobs]
                commands = [dd_command(p, limit) for p in paths]
                seconds, cpu = timed_on(mounted, _run_all, commands)
                table.result(_label(kind, limit)).add(
                    mib_per_s(nbytes, seconds), cpu, nbytes, mounted.peak_rss()
                )
                if round_ == 0:
                    verify_file(paths[-1], blobs[-1], kind, limit)
    return table


@job
def memory(ctx: Context) -> Table:
    """simvuefs only, one round: N parallel readers each reading K files in turn (N x K
    files in all, e.g. 16 x 4 x 64 MiB = 4 GiB) on a fresh mount: aggregate MiB/s and the
    daemon's peak RSS (the target: < 250 MiB)."""
    sizes = ctx.data.sizes
    blobs = ctx.data.readers
    total = sum(b.size for b in blobs)
    title = f"simvuefs memory: {sizes.readers} readers streaming {_size(total)} in all"
    table = Table("memory", title, "MiB/s", None)
    with ctx.harness.mount("simvuefs") as mounted:
        groups = [blobs[i :: sizes.readers] for i in range(sizes.readers)]
        script = 'for f do dd if="$f" of=/dev/null bs=1M status=none || exit 1; done'
        commands = [
            ["sh", "-c", script, "sh", *(str(ctx.path(mounted, b)) for b in g)] for g in groups
        ]
        seconds, cpu = timed_on(mounted, _run_all, commands)
        table.result("simvuefs").add(mib_per_s(total, seconds), cpu, total, mounted.peak_rss())
        verify_file(ctx.path(mounted, blobs[0]), blobs[0], "simvuefs")
    return table


def _run_all(commands: list[list[str]]) -> None:
    """Start all *commands* at once and wait for them; any failure is :class:`Broken`."""
    processes = [subprocess.Popen(c, stdin=subprocess.DEVNULL) for c in commands]
    codes = [p.wait() for p in processes]
    if any(codes):
        raise Broken(f"{commands[0][0]}: exit statuses {codes}")


@job
def listing(ctx: Context) -> Table:
    """simvuefs only: ls -l and find over the listing runs (cold on a fresh mount, then warm)
    and ls -l of one directory of many artifacts: time and API requests (devserver
    /admin/stats), against a direct httpx walk of the API (the runs pages, then one artifact
    listing per run, on one connection)."""
    sizes = ctx.data.sizes
    runs = sizes.runs + 3
    title = (
        f"Listing {sizes.runs:,} runs x {sizes.per_run} artifacts (simvuefs; {runs:,} runs in all)"
    )
    columns = ["API requests", "run-list requests", "artifact-list requests"]
    table = Table("listing", title, "ms", API_WALK)
    table.extra_columns = columns
    expected_files = sizes.runs * sizes.per_run + sizes.big_dir
    for _ in range(ctx.repeat):
        walked = _counted(ctx, table, API_WALK, _api_walk, ctx.devserver)
        if walked.count(".dat\n") != expected_files:
            raise Broken(f"httpx API walk: found {walked.count('.dat')} artifacts")
        with ctx.harness.mount("simvuefs") as mounted:
            runs_dir = mounted.root / "runs"
            steps: list[tuple[str, list[str]]] = [
                ("ls -l runs (cold)", ["ls", "-l", str(runs_dir)]),
                ("find runs (cold listings)", ["find", str(runs_dir)]),
                ("find runs (again, warm)", ["find", str(runs_dir)]),
            ]
            for name, command in steps:
                output = _counted(ctx, table, name, _run_quietly, command, mounted=mounted)
                if name.startswith("find") and output.count(".dat\n") != expected_files:
                    raise Broken(f"simvuefs: find listed {output.count('.dat')} artifacts")
        with ctx.harness.mount("simvuefs") as mounted:
            big = mounted.root / "runs" / BIG_RUN / "output"
            name = f"ls -l of a {sizes.big_dir:,}-artifact directory (fresh mount)"
            command = ["ls", "-l", str(big)]
            output = _counted(ctx, table, name, _run_quietly, command, mounted=mounted)
            if output.count(".dat\n") != sizes.big_dir:
                raise Broken(f"simvuefs: ls -l {BIG_RUN}/output listed the wrong entries")
    return table


def _run_quietly(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _api_walk(devserver: DevServer) -> str:
    """List every run and every run's artifacts through the API; return the artifact names,
    one a line."""
    names = []
    headers = {"Authorization": f"Bearer {devserver.token}"}
    with httpx.Client(base_url=devserver.url + "/api", headers=headers, timeout=60) as api:
        run_ids: list[str] = []
        while True:
            params = {"count": str(API_PAGE), "start": str(len(run_ids))}
            page = api.get("/runs", params=params).raise_for_status().json()["data"]
            run_ids += [run["id"] for run in page]
            if len(page) < API_PAGE:
                break
        for run_id in run_ids:
            artifacts = api.get(f"/runs/{run_id}/artifacts").raise_for_status().json()
            names += [artifact["name"] for artifact in artifacts]
    return "".join(f"{name}\n" for name in names)


def _counted(
    ctx: Context,
    table: Table,
    name: str,
    function: Callable[..., str],
    *args: Any,
    mounted: Mounted | None = None,
) -> str:
    """Call *function(*args)* with fresh devserver counters; add its time, the daemon's
    peak RSS and the request counts as row *name*; return what it returned."""
    ctx.devserver.reset_stats()
    start = time.perf_counter()
    output = function(*args)
    elapsed = time.perf_counter() - start
    counts = ctx.devserver.api_requests()
    artifact_lists = counts.get("GET /api/runs/{run_id}/artifacts", 0)
    artifact_lists += counts.get("GET /api/artifacts", 0)
    result = table.result(name)
    result.add(elapsed * 1000, rss=mounted.peak_rss() if mounted else 0)
    result.notes["API requests"] = str(sum(counts.values()))
    result.notes["run-list requests"] = str(counts.get("GET /api/runs", 0))
    result.notes["artifact-list requests"] = str(artifact_lists)
    return output


@job
def upload(ctx: Context) -> Table:
    """Upload of a large local file: cp into MNT/runs/upload/input/ (timed until cp returns,
    i.e. until the server has it) against a direct httpx upload doing the official client's
    requests (sha256, POST /api/artifacts, storage upload, PUT uploaded, attach, GET)."""
    size = ctx.data.sizes.upload
    table = Table("upload", f"Upload of a {_size(size)} file", "MiB/s", HTTPX_UPLOAD)
    api = httpx.Client(
        base_url=ctx.devserver.url + "/api",
        headers={"Authorization": f"Bearer {ctx.devserver.token}"},
        timeout=600,
    )
    with api:
        response = api.get("/runs", params={"filters": f'["name == {UPLOAD_RUN}"]'})
        run_id = response.raise_for_status().json()["data"][0]["id"]
        for round_ in range(ctx.repeat):
            source, sha = ctx.data.upload_sources["httpx"]
            name = f"httpx-{round_}.bin"
            seconds, _ = timed_on(None, _direct_upload, api, run_id, source, name)
            table.result(HTTPX_UPLOAD).add(mib_per_s(size, seconds))
            _check_uploaded(api, run_id, name, sha)
            source, sha = ctx.data.upload_sources["simvuefs"]
            name = f"simvuefs-{round_}.bin"
            with ctx.harness.mount("simvuefs", read_only=False) as mounted:
                target = mounted.root / "runs" / UPLOAD_RUN / "input" / name
                copy = ["cp", str(source), str(target)]
                seconds, cpu = timed_on(mounted, subprocess.run, copy, check=True)
                table.result("simvuefs cp").add(
                    mib_per_s(size, seconds), cpu, size, mounted.peak_rss()
                )
            _check_uploaded(api, run_id, name, sha)
    return table


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _direct_upload(api: httpx.Client, run_id: str, source: Path, name: str) -> None:
    """Upload *source* as the official client does (../shared/simvue-protocol.md 4.2)."""
    body = {
        "name": name,
        "original_path": str(source),
        "size": source.stat().st_size,
        "mime_type": "application/octet-stream",
        "checksum": _sha256_file(source),
        "metadata": None,
    }
    created = api.post("/artifacts", json=body).raise_for_status().json()
    with httpx.Client(timeout=600) as storage, source.open("rb") as file:
        if created.get("fields"):
            files = {"file": (source.name, file, "application/octet-stream")}
            response = storage.post(created["url"], data=created["fields"], files=files)
        else:
            response = storage.put(created["url"], content=file)
    if response.status_code not in (200, 204):
        raise Broken(f"direct upload: storage answered {response.status_code}")
    api.put(f"/artifacts/{created['id']}", json={"uploaded": True}).raise_for_status()
    path = f"/runs/{run_id}/artifacts/{created['id']}"
    api.put(path, json={"category": "input"}).raise_for_status()
    api.get(f"/artifacts/{created['id']}").raise_for_status()


def _check_uploaded(api: httpx.Client, run_id: str, name: str, sha256: str) -> None:
    """The server verifies the declared checksum on upload; check that it is the source's."""
    found = api.get(f"/runs/{run_id}/artifacts", params={"name": name}).raise_for_status().json()
    if len(found) != 1 or found[0]["checksum"] != sha256:
        raise Broken(f"upload of {name} did not land on the server with its content")


def _prefix(kind: str, size: int) -> int | None:
    """How much of a *size*-byte file contender *kind* reads (None: all of it)."""
    limit = SLOW_PREFIX.get(kind)
    return limit if limit is not None and limit < size else None


def _label(contender: str, limit: int | None) -> str:
    return f"{contender} (first {_size(limit)})" if limit else contender


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def _bytes(nbytes: int) -> str:
    return _size(nbytes) if nbytes >= 1024 else f"{nbytes} B"

"""Tests of the write path: the Uploader against a real devserver.

These run the real Uploader with the real SimvueClient against a real devserver
(``testbed/devserver.py``), with its fault switches for failures; one test checks with the
official ``simvue`` client that what we upload is what it downloads, and one kills a process
with SIGKILL mid-upload. The spool and its journal have their own tests
(tests/unit/test_spool.py), and so has landing, against a fake backend
(tests/unit/test_landing.py).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import settings_for, sha256
from official_util import OfficialClient

from simvuefs.backends.client import SimvueClient
from simvuefs.config import MIB, Settings
from simvuefs.errors import LocalError, ServerError, SimvueError, errno_for
from simvuefs.write import landing
from simvuefs.write.spool import Spool, read_pending
from simvuefs.write.staged import FileState, StagedFile
from simvuefs.write.upload import Uploader, open_uploader
from testbed.devserver import DevServer

CREATE = "POST /api/artifacts"
MARK = "PUT /api/artifacts/{artifact_id}"
ATTACH = "PUT /api/runs/{run_id}/artifacts/{artifact_id}"
READ_BACK = "GET /api/artifacts/{artifact_id}"
DELETE = "DELETE /api/artifacts/{artifact_id}"


# -- the Uploader against a real devserver --------------------------------------------------


def _settings(server: DevServer, spool_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "spool_dir": spool_dir,
        "spool_min_free": 0,
        "upload_retry_initial": 0.05,
        "upload_retry_max": 0.2,
        "shutdown_upload_wait": 5.0,
        **overrides,
    }
    return settings_for(server, **values)


@asynccontextmanager
async def _uploader(
    server: DevServer,
    spool_dir: Path,
    on_landed: Callable[[StagedFile], None] | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[SimvueClient, Uploader]]:
    settings = _settings(server, spool_dir, **overrides)
    async with (
        SimvueClient.open(settings) as client,
        open_uploader(client, settings, on_landed) as uploader,
    ):
        yield client, uploader


def _new_run(server: DevServer, name: str = "uploads") -> str:
    response = server.api("POST", "/runs", json={"name": name})
    response.raise_for_status()
    run_id: str = response.json()["id"]
    return run_id


async def _write(
    uploader: Uploader, f: StagedFile, content: bytes, chunk: int = 128 * 1024
) -> None:
    for offset in range(0, len(content), chunk):
        assert await uploader.write(f, offset, content[offset : offset + chunk]) == min(
            chunk, len(content) - offset
        )


async def _staged(uploader: Uploader, run_id: str, name: str, content: bytes) -> StagedFile:
    f = await uploader.create(run_id, name)
    await _write(uploader, f, content)
    return f


async def _wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    """Poll *condition* (state changed by background tasks) until true; fail after *seconds*."""
    with trio.fail_after(seconds):
        while True:
            if condition():
                return
            await trio.sleep(0.02)


def _inputs(server: DevServer, run_id: str) -> dict[str, str]:
    """{name: checksum} of the run's input artifacts, as the server lists them."""
    return {a["name"]: a["checksum"] for a in server.run_artifacts(run_id, category="input")}


def _requests(server: DevServer, route: str) -> int:
    count: int = server.stats()["api_requests"].get(route, 0)
    return count


async def test_commit_lands_an_artifact_the_official_client_downloads(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = _new_run(devserver, "landing")
    mesh = random.Random(1).randbytes(3 * MIB + 5)
    notes = b"hello from simvuefs\n"
    async with _uploader(devserver, tmp_path / "spool") as (client, uploader):
        f = await _staged(uploader, run_id, "system/mesh.dat", mesh)
        assert uploader.staged(run_id) == [f]
        assert uploader.lookup(run_id, "input", "system/mesh.dat") is f
        assert uploader.statistics().staged == 1
        # readers see the staged bytes, exactly as many as asked for unless at the end
        assert await uploader.read(f, MIB - 3, 10) == mesh[MIB - 3 : MIB + 7]
        assert await uploader.read(f, len(mesh) - 2, 100) == mesh[-2:]
        assert await uploader.read(f, len(mesh) + 1, 100) == b""

        artifact = await uploader.commit(f)
        assert artifact is not None
        assert f.state is FileState.LANDED
        assert f.artifact == artifact
        assert (artifact.name, artifact.size, artifact.checksum) == (
            "system/mesh.dat",
            len(mesh),
            sha256(mesh),
        )
        assert artifact.original_path == f"simvuefs://{run_id}/input/system/mesh.dat"
        assert uploader.staged(run_id) == []
        assert uploader.pending() == []
        assert await uploader.read(f, 0, 4) == mesh[:4]  # the open handle still reads
        creates = _requests(devserver, CREATE)
        assert await uploader.commit(f) == artifact  # unchanged: nothing is sent again
        assert _requests(devserver, CREATE) == creates
        await uploader.release(f, write=True)

        g = await _staged(uploader, run_id, "notes.txt", notes)
        await uploader.commit(g)
        await uploader.release(g, write=True)
        (listed,) = await client.list_artifacts(run_id, "input", name="system/mesh.dat")
        assert (listed.id, listed.checksum, listed.size) == (artifact.id, sha256(mesh), len(mesh))
        assert await client.read_range(listed, 0, len(mesh)) == mesh
        (text,) = await client.list_artifacts(run_id, "input", name="notes.txt")
        assert text.mime_type == "text/plain"
        stats = uploader.statistics()
        assert (stats.staged, stats.pending, stats.committed, stats.failed) == (0, 0, 2, 0)
        assert stats.bytes_uploaded == len(mesh) + len(notes)
    assert not list((tmp_path / "spool" / "pending").iterdir())
    assert not list((tmp_path / "spool" / "staging").iterdir())
    assert not list((tmp_path / "spool" / "landed").iterdir())

    official = OfficialClient(devserver, tmp_path / "official")
    result = official.call(
        "download", run_id=run_id, output_dir=str(tmp_path / "out"), categories=["input"]
    )
    assert result["categories"]["input"] == {
        "system/mesh.dat": sha256(mesh),
        "notes.txt": sha256(notes),
    }


@pytest.mark.parametrize("style", ["put", "post"])
async def test_identical_content_is_not_uploaded_twice(
    devserver_factory: Callable[..., DevServer], tmp_path: Path, style: str
) -> None:
    server = devserver_factory("--upload-style", style)
    run_id = _new_run(server)
    content = random.Random(2).randbytes(MIB)
    async with _uploader(server, tmp_path / "spool") as (_, uploader):
        first = await uploader.commit(await _staged(uploader, run_id, "a.bin", content))
        second = await uploader.commit(await _staged(uploader, run_id, "copy/a.bin", content))
        assert first is not None
        assert second is not None
        assert first.id != second.id
        assert uploader.statistics().bytes_uploaded == len(content)
    assert server.stats()["uploads"] == 1
    assert _inputs(server, run_id) == {"a.bin": sha256(content), "copy/a.bin": sha256(content)}


async def test_random_writes_and_truncates_are_hashed_correctly(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = _new_run(devserver)
    expected = bytearray(random.Random(3).randbytes(2 * MIB))
    async with _uploader(devserver, tmp_path / "spool") as (client, uploader):
        f = await _staged(uploader, run_id, "edited.bin", bytes(expected))
        await uploader.write(f, 1000, b"X" * 5000)  # overwrite in the middle
        expected[1000:6000] = b"X" * 5000
        await uploader.truncate(f, MIB)
        del expected[MIB:]
        await uploader.truncate(f, MIB + 100)  # grows with zeros
        expected += bytes(100)
        await uploader.write(f, MIB + 200, b"tail")  # past the end: a hole of zeros
        expected += bytes(100) + b"tail"
        assert f.size == len(expected)
        assert await uploader.read(f, 0, len(expected) + 10) == expected
        artifact = await uploader.commit(f)
        assert artifact is not None
        assert artifact.checksum == sha256(expected)
        (listed,) = await client.list_artifacts(run_id, "input")
        assert await client.read_range(listed, 0, len(expected)) == expected

        empty = await uploader.create(run_id, "empty")
        landed = await uploader.commit(empty)
        assert landed is not None
        assert (landed.size, landed.checksum) == (0, sha256(b""))


async def test_queued_writes_land_in_order_whatever_their_offsets(
    devserver: DevServer, tmp_path: Path
) -> None:
    """Writes return once queued (write-behind); a rewrite of bytes still queued, a jump
    back and a hole must reach the disk and the hash in the order they were made."""
    run_id = _new_run(devserver)
    rng = random.Random(9)
    expected = bytearray()
    async with _uploader(devserver, tmp_path / "spool") as (_, uploader):
        f = await uploader.create(run_id, "queued.bin")
        for index in range(24):  # sequential MiBs, each rewritten at once in part
            chunk = rng.randbytes(MIB)
            await uploader.write(f, index * MIB, chunk)
            patch = rng.randbytes(1000)
            await uploader.write(f, index * MIB + 10, patch)
            expected += chunk
            expected[index * MIB + 10 : index * MIB + 1010] = patch
        await uploader.write(f, 30 * MIB, b"after a hole")
        expected += bytes(6 * MIB) + b"after a hole"
        assert f.size == len(expected)
        assert await uploader.read(f, 0, len(expected)) == expected
        sequential = await uploader.create(run_id, "sequential.bin")
        content = rng.randbytes(40 * MIB)
        await _write(uploader, sequential, content, MIB)
        landed = [await uploader.commit(f), await uploader.commit(sequential)]
    final = bytes(expected)
    assert [a.checksum for a in landed if a is not None] == [sha256(final), sha256(content)]
    assert _inputs(devserver, run_id) == {
        "queued.bin": sha256(final),
        "sequential.bin": sha256(content),
    }


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (needs root), unmounted at the end."""
    path = tmp_path / "small"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _fill(path: Path) -> None:
    """Write *path* until its disk is full."""
    with path.open("wb", buffering=0) as stream:
        try:
            while True:
                stream.write(bytes(MIB))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


async def test_a_queued_write_the_disk_cannot_take_fails_the_file(
    devserver: DevServer, small_disk: Path
) -> None:
    """The disk fills up after a write was accepted into the queue: that write is lost, so
    the next write and every commit fail with ENOSPC and nothing is uploaded."""
    run_id = _new_run(devserver)
    async with _uploader(devserver, small_disk / "spool") as (client, uploader):
        f = await uploader.create(run_id, "lost.bin")
        await uploader.write(f, 0, b"a" * MIB)  # measures the free space: about 15 MiB
        filler = small_disk / "filler"
        _fill(filler)
        assert await uploader.write(f, MIB, b"b" * MIB) == MIB  # queued: it seemed to fit
        await uploader.read(f, 0, 1)  # waits for the queue
        with pytest.raises(LocalError) as refused:
            await uploader.write(f, 2 * MIB, b"c")
        assert errno_for(refused.value) == errno.ENOSPC
        filler.unlink()
        for _ in range(2):  # room again, but the lost write stays lost
            with pytest.raises(LocalError) as failed:
                await uploader.commit(f)
            assert errno_for(failed.value) == errno.ENOSPC
            assert f.state is FileState.STAGED
        await uploader.discard(f)
        assert await client.list_artifacts(run_id, "input") == []


async def test_writes_after_commit_are_refused_and_second_writers_share(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = _new_run(devserver)
    async with _uploader(devserver, tmp_path / "spool") as (_, uploader):
        f = await _staged(uploader, run_id, "busy.txt", b"first")
        with pytest.raises(LocalError) as exists:
            await uploader.create(run_id, "busy.txt")
        assert errno_for(exists.value) == errno.EEXIST
        await uploader.open(f, write=True)  # a second writer shares the file
        await uploader.release(f, write=True)
        await uploader.open(f, write=False)  # readers are welcome
        assert await uploader.read(f, 0, 100) == b"first"
        await uploader.release(f, write=False)
        with pytest.raises(LocalError) as invalid:
            await uploader.create(run_id, "data(1).csv")
        assert errno_for(invalid.value) == errno.EINVAL

        await uploader.commit(f)
        with pytest.raises(LocalError) as frozen:
            await uploader.write(f, 5, b"more")
        assert errno_for(frozen.value) == errno.EBADF
        with pytest.raises(LocalError):
            await uploader.truncate(f, 0)
        await uploader.release(f, write=True)
        with pytest.raises(LocalError) as gone:
            await uploader.open(f, write=False)
        assert errno_for(gone.value) == errno.ESTALE

        # two creators racing for one name: exactly one wins
        outcomes: list[str] = []

        async def create() -> None:
            try:
                await uploader.create(run_id, "race.txt")
                outcomes.append("created")
            except LocalError as exc:
                outcomes.append(errno.errorcode[exc.errno])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            nursery.start_soon(create)
        assert sorted(outcomes) == ["EEXIST", "created"]
        # once landed, the uploader no longer holds the name (the listing has it)
        await uploader.commit(await _staged(uploader, run_id, "again.txt", b"1"))
        await uploader.create(run_id, "again.txt")


async def test_concurrent_commits_land_once_and_report_each_landing(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = _new_run(devserver)
    landed: list[StagedFile] = []
    async with _uploader(devserver, tmp_path / "spool", on_landed=landed.append) as (_, uploader):
        f = await _staged(uploader, run_id, "twice.txt", b"flush and fsync at once")
        results: list[object] = []

        async def commit() -> None:
            results.append(await uploader.commit(f))

        async with trio.open_nursery() as nursery:  # an fsync racing a flush
            nursery.start_soon(commit)
            nursery.start_soon(commit)
        assert results == [f.artifact, f.artifact]
        assert landed == [f]
        assert _requests(devserver, CREATE) == 1

        devserver.set_faults(api_error_status=500, api_error_count=1, api_error_route=ATTACH)
        g = await _staged(uploader, run_id, "later.txt", b"lands in the background")
        with pytest.raises(ServerError):
            await uploader.commit(g)
        await _wait_for(lambda: len(landed) == 2)
        assert landed[1] is g
        assert g.state is FileState.LANDED
        assert uploader.lookup(run_id, "input", "later.txt") is None


async def test_a_full_spool_refuses_writes_with_enospc(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = _new_run(devserver)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    stat = os.statvfs(spool_dir)
    free = stat.f_bavail * stat.f_frsize
    async with _uploader(devserver, spool_dir, spool_min_free=free - 512 * MIB) as (_, uploader):
        f = await _staged(uploader, run_id, "big.bin", b"small is fine")
        with pytest.raises(LocalError, match="is full") as full:
            await uploader.truncate(f, 4096 * MIB)
        assert errno_for(full.value) == errno.ENOSPC
        with pytest.raises(LocalError) as full_write:
            await uploader.write(f, 4096 * MIB, b"x")
        assert errno_for(full_write.value) == errno.ENOSPC
        assert f.size == len(b"small is fine")
        artifact = await uploader.commit(f)
        assert artifact is not None
        assert artifact.checksum == sha256(b"small is fine")
    async with _uploader(devserver, spool_dir, spool_min_free=free + 1024 * MIB) as (_, uploader):
        with pytest.raises(LocalError) as no_room:
            await uploader.create(run_id, "nothing.bin")
        assert errno_for(no_room.value) == errno.ENOSPC


@pytest.mark.parametrize(
    ("faults", "expected_creates"),
    [
        pytest.param({"api_error_route": CREATE}, None, id="create-artifact-500"),
        pytest.param(
            {"storage_error_status": 500, "storage_error_rate": 1.0}, None, id="storage-500"
        ),
        pytest.param({"api_error_route": MARK}, 1, id="mark-uploaded-500"),
        pytest.param({"api_error_route": ATTACH}, 1, id="attach-500"),
        pytest.param({"api_error_route": READ_BACK}, 1, id="read-back-500"),
    ],
)
async def test_failed_upload_stays_pending_and_lands_in_the_background(
    devserver: DevServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    faults: dict[str, Any],
    expected_creates: int | None,
) -> None:
    run_id = _new_run(devserver)
    content = random.Random(4).randbytes(300_000)
    if "api_error_route" in faults:
        faults = {**faults, "api_error_status": 500, "api_error_rate": 1.0}
    spool_dir = tmp_path / "spool"
    async with _uploader(devserver, spool_dir) as (_, uploader):
        f = await _staged(uploader, run_id, "results/out.bin", content)
        devserver.set_faults(**faults)
        with (
            caplog.at_level(logging.WARNING, logger="simvuefs.write.upload"),
            pytest.raises(SimvueError) as failure,
        ):
            await uploader.commit(f)
        assert errno_for(failure.value) == errno.EIO
        assert "results/out.bin" in caplog.text
        assert "attempt 1" in caplog.text
        assert f.state is FileState.PENDING
        assert uploader.staged(run_id) == [f]  # still listed and readable
        assert await uploader.read(f, 1000, 10) == content[1000:1010]
        # retried in the background while the fault lasts, visible with its reason
        await _wait_for(lambda: f.attempts >= 3)
        (pending,) = uploader.pending()
        assert (pending.run_id, pending.name, pending.size) == (run_id, "results/out.bin", 300_000)
        assert "500" in pending.last_error
        assert pending.state in ("waiting", "uploading")
        (on_disk,) = read_pending(spool_dir)  # what `simvuefs status` shows
        assert on_disk.name == "results/out.bin"
        assert on_disk.attempts >= 1
        assert _inputs(devserver, run_id) in ({}, {"results/out.bin": sha256(content)})

        devserver.clear_faults()
        await _wait_for(lambda: f.state is FileState.LANDED)
        assert uploader.pending() == []
        assert read_pending(spool_dir) == []
        assert f.artifact is not None
        assert f.artifact.checksum == sha256(content)
        assert await uploader.commit(f) == f.artifact
        stats = uploader.statistics()
        assert stats.committed == 1
        assert stats.failed >= 3
        assert stats.pending == 0
    # exactly one artifact in the run, and a retry after the create step never re-creates it
    assert _inputs(devserver, run_id) == {"results/out.bin": sha256(content)}
    assert len(devserver.run_artifacts(run_id)) == 1
    # a failed create or upload starts over (POST again); later steps resume in place
    creates = _requests(devserver, CREATE)
    assert creates >= 3 if expected_creates is None else creates == expected_creates


async def test_bad_digest_is_reported_and_retried(devserver: DevServer, tmp_path: Path) -> None:
    run_id = _new_run(devserver)
    content = random.Random(5).randbytes(100_000)
    spool_dir = tmp_path / "spool"
    async with _uploader(devserver, spool_dir, upload_retry_initial=0.2) as (_, uploader):
        f = await _staged(uploader, run_id, "digest.bin", content)
        devserver.set_faults(storage_error_status=500, storage_error_count=1)
        with pytest.raises(ServerError):
            await uploader.commit(f)
        # the spool copy is damaged before the retry: storage rejects it (BadDigest)
        data = spool_dir / "pending" / f"{f.spool_id}.data"
        damaged = bytearray(content)
        damaged[10] ^= 0xFF
        data.write_bytes(damaged)
        await _wait_for(lambda: "BadDigest" in f.last_error)
        assert f.state is FileState.PENDING
        assert _inputs(devserver, run_id) == {}
        data.write_bytes(content)
        await _wait_for(lambda: f.state is FileState.LANDED)
    assert _inputs(devserver, run_id) == {"digest.bin": sha256(content)}


async def test_pending_uploads_resume_after_a_restart(devserver: DevServer, tmp_path: Path) -> None:
    run_id = _new_run(devserver)
    contents = {f"file{i}.dat": random.Random(i).randbytes(50_000 + i) for i in range(3)}
    spool_dir = tmp_path / "spool"
    devserver.set_faults(api_error_status=500, api_error_rate=1.0)
    async with _uploader(devserver, spool_dir) as (_, uploader):
        for name, content in contents.items():
            f = await _staged(uploader, run_id, name, content)
            with pytest.raises(SimvueError):
                await uploader.commit(f)
            await uploader.release(f, write=True)
        assert len(uploader.pending()) == 3
    assert [r.name for r in read_pending(spool_dir)] == list(contents)
    devserver.clear_faults()
    async with _uploader(devserver, spool_dir) as (_, uploader):
        resumed = {f.name: f for f in uploader.staged(run_id)}
        assert set(resumed) == set(contents)
        f = resumed["file1.dat"]
        await uploader.open(f, write=False)  # a pending file stays readable
        assert await uploader.read(f, 0, 50_001) == contents["file1.dat"]
        await _wait_for(lambda: not uploader.pending())
        assert await uploader.read(f, 49_990, 100) == contents["file1.dat"][49_990:]
        await uploader.release(f, write=False)
    assert _inputs(devserver, run_id) == {name: sha256(c) for name, c in contents.items()}


CHILD = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from simvuefs.backends.client import SimvueClient
    from simvuefs.config import Settings
    from simvuefs.write.upload import open_uploader

    async def main(url, token, spool, run_id):
        settings = Settings(url=url, token=token, spool_dir=Path(spool), spool_min_free=0)
        async with SimvueClient.open(settings) as client:
            async with open_uploader(client, settings) as uploader:
                f = await uploader.create(run_id, "killed/big.bin")
                for _ in range(8):
                    await uploader.write(f, f.size, b"k" * 1024 * 1024)
                await uploader.commit(f)  # storage stalls: SIGKILL arrives mid-upload

    trio.run(main, *sys.argv[1:])
    """
)


async def test_a_killed_process_leaves_a_pending_upload_that_lands_later(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = _new_run(devserver)
    spool_dir = tmp_path / "spool"
    devserver.set_faults(stall_seconds=60.0, stall_where="storage_before")
    child = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, devserver.api_url, devserver.token, str(spool_dir), run_id]
    )
    try:
        await _wait_for(lambda: bool(read_pending(spool_dir)), seconds=30)
        await _wait_for(lambda: devserver.stats()["api_requests"].get(CREATE, 0) == 1)
        await trio.sleep(0.3)  # the upload has started and stalls in storage
        assert child.returncode is None
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    devserver.clear_faults()
    async with _uploader(devserver, spool_dir) as (_, uploader):
        await _wait_for(lambda: not uploader.pending())
        assert uploader.statistics().committed == 1
    assert _inputs(devserver, run_id) == {"killed/big.bin": sha256(b"k" * 8 * MIB)}


async def test_a_corrupt_record_is_skipped_and_kept(
    devserver: DevServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "spool"
    Spool.open(spool_dir, min_free=0).close()
    bad = "f" * 32
    (spool_dir / "pending" / f"{bad}.json").write_text('{"version": 1, "run_id": ')
    (spool_dir / "pending" / f"{bad}.data").write_bytes(b"keep me")
    with caplog.at_level(logging.WARNING):
        async with _uploader(devserver, spool_dir) as (_, uploader):
            assert uploader.pending() == []
    assert "skipping unreadable upload record" in caplog.text
    assert (spool_dir / "pending" / f"{bad}.data").read_bytes() == b"keep me"


async def test_shutdown_waits_for_uploads_in_progress_then_leaves_the_rest(
    devserver: DevServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = _new_run(devserver)
    spool_dir = tmp_path / "spool"

    async def upload_in_background(uploader: Uploader, name: str) -> StagedFile:
        """Fail the commit once, so that the upload continues as a background retry."""
        f = await _staged(uploader, run_id, name, name.encode())
        devserver.set_faults(api_error_status=500, api_error_count=1, api_error_route=CREATE)
        with pytest.raises(ServerError):
            await uploader.commit(f)
        await _wait_for(lambda: uploader.pending()[0].state == "uploading")
        return f

    devserver.set_faults(stall_seconds=1.0, stall_where="storage_before")
    async with _uploader(devserver, spool_dir, shutdown_upload_wait=10.0) as (_, uploader):
        slow = await upload_in_background(uploader, "slow.bin")
    assert slow.state is FileState.LANDED  # the exit waited for it
    assert _inputs(devserver, run_id) == {"slow.bin": sha256(b"slow.bin")}

    devserver.set_faults(stall_seconds=2.0)
    with caplog.at_level(logging.WARNING, logger="simvuefs.write.upload"):
        async with _uploader(devserver, spool_dir, shutdown_upload_wait=0.2) as (_, uploader):
            stuck = await upload_in_background(uploader, "stuck.bin")
    assert stuck.state is FileState.PENDING
    assert "1 upload(s) still pending" in caplog.text
    assert str(spool_dir) in caplog.text
    assert [r.name for r in read_pending(spool_dir)] == ["stuck.bin"]


async def test_discard_before_landing(devserver: DevServer, tmp_path: Path) -> None:
    run_id = _new_run(devserver)
    spool_dir = tmp_path / "spool"
    async with _uploader(devserver, spool_dir) as (_, uploader):
        staged = await _staged(uploader, run_id, "scratch.txt", b"scratch")
        await uploader.discard(staged)
        assert staged.state is FileState.DISCARDED
        assert uploader.staged(run_id) == []
        assert await uploader.write(staged, 7, b"!") == 1  # an open unlinked file still works
        assert await uploader.commit(staged) is None
        await uploader.release(staged, write=True)

        devserver.set_faults(api_error_status=500, api_error_rate=1.0, api_error_route=CREATE)
        pending = await _staged(uploader, run_id, "scratch.txt", b"pending")
        with pytest.raises(ServerError):
            await uploader.commit(pending)
        await uploader.discard(pending)
        assert uploader.pending() == []
        assert read_pending(spool_dir) == []
        devserver.clear_faults()

        landed = await _staged(uploader, run_id, "kept.txt", b"kept")
        await uploader.commit(landed)
        with pytest.raises(LocalError) as refused:
            await uploader.discard(landed)
        assert errno_for(refused.value) == errno.EPERM
        await trio.sleep(0.3)  # long enough for any stray retry
    assert _inputs(devserver, run_id) == {"kept.txt": sha256(b"kept")}
    assert not list((spool_dir / "pending").iterdir())


async def test_rsync_temp_then_rename_leaves_only_the_final_name(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = _new_run(devserver)
    content = random.Random(6).randbytes(MIB)
    async with _uploader(devserver, tmp_path / "spool") as (_, uploader):
        # rsync: write .name.XXXXXX, close (the upload lands), then rename
        f = await _staged(uploader, run_id, "system/.mesh.dat.Ab12Cd", content)
        temporary = await uploader.commit(f)
        await uploader.release(f, write=True)
        assert temporary is not None
        await uploader.rename(f, "system/mesh.dat")
        assert f.state is FileState.LANDED
        assert f.name == "system/mesh.dat"
        assert f.artifact is not None
        assert f.artifact.id != temporary.id
        assert _requests(devserver, DELETE) == 1

        # renamed while still being written: only the local name changes
        g = await _staged(uploader, run_id, "partial.tmp", b"abc")
        await uploader.rename(g, "whole.txt")
        assert uploader.lookup(run_id, "input", "partial.tmp") is None
        await uploader.commit(g)

        # renamed while pending: the record changes, the new name lands later
        devserver.set_faults(api_error_status=500, api_error_rate=1.0, api_error_route=ATTACH)
        h = await _staged(uploader, run_id, ".late.XyZ", b"late")
        with pytest.raises(ServerError):
            await uploader.commit(h)
        await uploader.rename(h, "late.txt")
        assert [p.name for p in uploader.pending()] == ["late.txt"]
        with pytest.raises(LocalError) as taken:
            await uploader.rename(await uploader.create(run_id, "x"), "late.txt")
        assert errno_for(taken.value) == errno.EEXIST
        devserver.clear_faults()
        await _wait_for(lambda: h.state is FileState.LANDED)
        await uploader.discard(uploader.lookup(run_id, "input", "x"))  # type: ignore[arg-type]
    assert _inputs(devserver, run_id) == {
        "system/mesh.dat": sha256(content),
        "whole.txt": sha256(b"abc"),
        "late.txt": sha256(b"late"),
    }
    assert devserver.stats()["uploads"] == 3  # the renames moved no bytes


async def test_rename_long_after_landing_is_a_cross_device_move(
    devserver: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(landing, "LANDED_RETENTION", 0.05)
    run_id = _new_run(devserver)
    async with _uploader(devserver, tmp_path / "spool") as (_, uploader):
        f = await _staged(uploader, run_id, "old.txt", b"old")
        await uploader.commit(f)
        await _wait_for(lambda: not list((tmp_path / "spool" / "landed").iterdir()))
        with pytest.raises(LocalError) as moved:
            await uploader.rename(f, "new.txt")
        assert errno_for(moved.value) == errno.EXDEV  # mv then copies and unlinks
        assert f.state is FileState.LANDED
        assert f.name == "old.txt"
        assert uploader.lookup(run_id, "input", "new.txt") is None
    assert _inputs(devserver, run_id) == {"old.txt": sha256(b"old")}


async def test_a_300_mib_upload_runs_in_bounded_memory(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = _new_run(devserver)
    size = 300 * MIB
    block = MIB
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        async with _uploader(devserver, tmp_path / "spool") as (client, uploader):
            f = await uploader.create(run_id, "huge.bin")
            for index in range(size // block):
                data = index.to_bytes(4, "big") * (block // 4)
                digest.update(data)
                await uploader.write(f, index * block, data)
            del data
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            artifact = await uploader.commit(f)
            _, peak = tracemalloc.get_traced_memory()
            await uploader.release(f, write=True)
            assert artifact is not None
            assert artifact.checksum == digest.hexdigest()
            (listed,) = await client.list_artifacts(run_id, "input")
            assert (
                await client.read_range(listed, size - 8, 8)
                == (size // block - 1).to_bytes(4, "big") * 2
            )
    finally:
        tracemalloc.stop()
    assert peak - before < 32 * MIB, f"commit of 300 MiB used {(peak - before) / MIB:.1f} MiB"
    assert devserver.stats()["upload_bytes"] == size

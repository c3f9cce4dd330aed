"""Uploads the server refuses for good, host-side requests, and safe deletes: the real
Uploader and SimvueClient against a real devserver (its fault switches, ``--realistic``
and ``--max-upload-size``). The same through a real mount: tests/mount/test_pending_mount.py.
"""

from __future__ import annotations

import errno
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import settings_for, sha256

from simvuefs.backends.client import SimvueClient
from simvuefs.control import pending
from simvuefs.errors import LocalError, UploadRefused
from simvuefs.write import mailbox
from simvuefs.write.mailbox import Answer, Request
from simvuefs.write.spool import read_pending
from simvuefs.write.staged import FileState, StagedFile
from simvuefs.write.upload import Uploader, open_uploader
from testbed.devserver import DevServer

CREATE = "POST /api/artifacts"
ATTACH = "PUT /api/runs/{run_id}/artifacts/{artifact_id}"
DELETE = "DELETE /api/artifacts/{artifact_id}"


@asynccontextmanager
async def uploader_of(
    server: DevServer,
    spool_dir: Path,
    on_dropped: Callable[[StagedFile], None] | None = None,
    **overrides: Any,
) -> AsyncIterator[Uploader]:
    """An Uploader on *spool_dir* for *server*, retrying every 50-200 ms."""
    values: dict[str, Any] = {
        "spool_dir": spool_dir,
        "spool_min_free": 0,
        "upload_retry_initial": 0.05,
        "upload_retry_max": 0.2,
        "shutdown_upload_wait": 5.0,
        **overrides,
    }
    settings = settings_for(server, **values)
    async with (
        SimvueClient.open(settings) as client,
        open_uploader(client, settings, on_dropped=on_dropped) as uploader,
    ):
        yield uploader


def new_run(server: DevServer, name: str = "refusals") -> str:
    answer = server.api("POST", "/runs", json={"name": name})
    answer.raise_for_status()
    run_id: str = answer.json()["id"]
    return run_id


async def written(uploader: Uploader, run_id: str, name: str, content: bytes) -> StagedFile:
    f = await uploader.create(run_id, name)
    await uploader.write(f, 0, content)
    await uploader.release(f, write=True)
    return f


def inputs(server: DevServer, run_id: str) -> dict[str, str]:
    return {a["name"]: a["checksum"] for a in server.run_artifacts(run_id, category="input")}


def requests(server: DevServer, route: str) -> int:
    count: int = server.stats()["api_requests"].get(route, 0)
    return count


async def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - state changed by background tasks
            await trio.sleep(0.02)


async def test_a_rejected_name_is_final_journaled_and_fixed_by_a_rename(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = new_run(devserver)
    devserver.set_faults(reject_artifact_names="forbidden")
    spool_dir = tmp_path / "spool"
    async with uploader_of(devserver, spool_dir) as uploader:
        f = await written(uploader, run_id, "forbidden.dat", b"content")
        with pytest.raises(UploadRefused, match="is not allowed") as refused:
            await uploader.commit(f)
        assert refused.value.errno == errno.EINVAL
        await trio.sleep(0.6)  # several backoff periods: no retry
        assert requests(devserver, CREATE) == 1
        assert [u.state for u in uploader.pending()] == ["failed"]
    [record] = read_pending(spool_dir)
    assert (record.failed, record.attempts) == ("EINVAL", 1)
    assert "422" in record.last_error
    assert "is not allowed" in record.last_error
    async with uploader_of(devserver, spool_dir) as uploader:  # a remount
        await trio.sleep(0.6)
        assert requests(devserver, CREATE) == 1  # still not retried
        [f] = uploader.staged(run_id)
        assert f.failed
        with pytest.raises(UploadRefused):
            await uploader.commit(f)  # close() again: the journaled answer, no request
        assert requests(devserver, CREATE) == 1
        await uploader.rename(f, "allowed.dat")  # the user's fix: a name the server takes
        await wait_for(lambda: f.state is FileState.LANDED)
    assert inputs(devserver, run_id) == {"allowed.dat": sha256(b"content")}


async def test_a_file_over_the_storage_limit_gets_efbig(
    devserver_factory: Callable[..., DevServer], tmp_path: Path
) -> None:
    server = devserver_factory("--realistic", "--max-upload-size", "10000")
    run_id = new_run(server)
    small, large = random.Random(1).randbytes(10_000), random.Random(2).randbytes(10_001)
    async with uploader_of(server, tmp_path / "spool") as uploader:
        await uploader.commit(await written(uploader, run_id, "small.bin", small))
        f = await written(uploader, run_id, "large.bin", large)
        with pytest.raises(UploadRefused, match="EntityTooLarge") as refused:
            await uploader.commit(f)
        assert refused.value.errno == errno.EFBIG
        await trio.sleep(0.6)
        assert server.stats()["uploads_rejected"] == 1
    assert inputs(server, run_id) == {"small.bin": sha256(small)}


async def test_a_refused_attach_lands_after_a_retry_request(
    devserver: DevServer, tmp_path: Path
) -> None:
    """A run that is not the user's: 403 on the attach (the multi-user devserver's owner
    check answers the same; the fault switch keeps this test independent of it)."""
    run_id = new_run(devserver)
    devserver.set_faults(api_error_status=403, api_error_rate=1.0, api_error_route=ATTACH)
    spool_dir = tmp_path / "spool"
    async with uploader_of(devserver, spool_dir) as uploader:
        f = await written(uploader, run_id, "mesh.dat", b"mesh")
        with pytest.raises(UploadRefused) as refused:
            await uploader.commit(f)
        assert refused.value.errno == errno.EACCES
        devserver.clear_faults()
        # `simvuefs pending retry` while the uploader runs: through the spool's mailbox
        answer, running = await trio.to_thread.run_sync(
            pending.submit, spool_dir, Request("retry", (f.spool_id,))
        )
        assert (answer, running) == (Answer((f.spool_id,)), True)
        await wait_for(lambda: f.state is FileState.LANDED)
    assert inputs(devserver, run_id) == {"mesh.dat": sha256(b"mesh")}
    assert len(devserver.run_artifacts(run_id)) == 1


async def test_a_drop_request_forgets_a_pending_file(devserver: DevServer, tmp_path: Path) -> None:
    run_id = new_run(devserver)
    devserver.set_faults(reject_artifact_names="refused")
    spool_dir = tmp_path / "spool"
    dropped: list[StagedFile] = []
    async with uploader_of(devserver, spool_dir, on_dropped=dropped.append) as uploader:
        f = await written(uploader, run_id, "refused.dat", b"x")
        with pytest.raises(UploadRefused):
            await uploader.commit(f)
        answer, running = await trio.to_thread.run_sync(
            pending.submit, spool_dir, Request("drop", (f.spool_id, "0" * 32))
        )
        assert running
        assert answer.done == (f.spool_id,)
        assert list(answer.skipped) == ["0" * 32]
        assert dropped == [f]
        assert f.state is FileState.DISCARDED
        assert uploader.staged(run_id) == []
    assert read_pending(spool_dir) == []
    assert inputs(devserver, run_id) == {}


async def test_a_drop_of_failed_uploads_keeps_one_retried_meanwhile(
    devserver: DevServer, tmp_path: Path
) -> None:
    """``pending drop`` (no --all) picked the file while it was failed; a retry cleared that
    before the drop reached the uploader: it is kept, and still lands."""
    run_id = new_run(devserver)
    devserver.set_faults(reject_artifact_names="refused")
    spool_dir = tmp_path / "spool"
    async with uploader_of(devserver, spool_dir) as uploader:
        f = await written(uploader, run_id, "refused.dat", b"x")
        with pytest.raises(UploadRefused):
            await uploader.commit(f)
        devserver.clear_faults()  # the retry is not refused, only delayed (503)
        devserver.set_faults(api_error_status=503, api_error_rate=1.0, api_error_route=CREATE)
        await uploader.apply(Request("retry", (f.spool_id,)))
        assert not f.failed
        answer = await uploader.apply(Request("drop", (f.spool_id,), only_failed=True))
        assert answer == Answer((), {f.spool_id: mailbox.NOT_FAILED})
        assert f.state is FileState.PENDING
        devserver.clear_faults()
        await wait_for(lambda: f.state is FileState.LANDED)
    assert inputs(devserver, run_id) == {"refused.dat": sha256(b"x")}


async def test_a_rename_keeps_an_artifact_that_another_run_shares(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id, other = new_run(devserver), new_run(devserver, "other")
    async with uploader_of(devserver, tmp_path / "spool") as uploader:
        plain = await written(uploader, run_id, ".plain.tmp", b"plain")
        await uploader.commit(plain)
        await uploader.rename(plain, "plain.dat")  # the rsync pattern: the old one goes
        shared = await written(uploader, run_id, ".shared.tmp", b"shared")
        artifact = await uploader.commit(shared)
        assert artifact is not None
        devserver.api(
            "PUT", f"/runs/{other}/artifacts/{artifact.id}", json={"category": "input"}
        ).raise_for_status()
        await uploader.rename(shared, "shared.dat")
        assert shared.state is FileState.LANDED
    assert inputs(devserver, run_id) == {
        "plain.dat": sha256(b"plain"),
        ".shared.tmp": sha256(b"shared"),  # attached to the other run too: kept
        "shared.dat": sha256(b"shared"),
    }
    assert inputs(devserver, other) == {".shared.tmp": sha256(b"shared")}
    assert requests(devserver, DELETE) == 1


async def test_without_deletes_a_rename_of_an_uploaded_file_is_exdev(
    devserver: DevServer, tmp_path: Path
) -> None:
    run_id = new_run(devserver)
    async with uploader_of(devserver, tmp_path / "spool", delete_artifacts=False) as uploader:
        f = await written(uploader, run_id, ".mesh.tmp", b"mesh")
        await uploader.commit(f)
        with pytest.raises(LocalError, match="--no-delete") as refused:
            await uploader.rename(f, "mesh.dat")
        assert refused.value.errno == errno.EXDEV
        g = await uploader.create(run_id, ".staged.tmp")
        await uploader.rename(g, "staged.dat")  # nothing uploaded yet: a local rename
        await uploader.release(g, write=True)
        await uploader.commit(g)
    assert inputs(devserver, run_id) == {".mesh.tmp": sha256(b"mesh"), "staged.dat": sha256(b"")}
    assert requests(devserver, DELETE) == 0


async def test_a_rename_keeps_an_artifact_the_server_had_under_another_name(
    devserver: DevServer, tmp_path: Path
) -> None:
    """A server that answers a create with an artifact it already had (dedup by checksum,
    unconfirmed for the real one) reads back that artifact's own name: not ours to delete."""
    run_id = new_run(devserver)
    async with uploader_of(devserver, tmp_path / "spool") as uploader:
        f = await written(uploader, run_id, ".mesh.tmp", b"mesh")
        artifact = await uploader.commit(f)
        assert artifact is not None
        f.artifact = artifact.replace(name="someone else's mesh")
        await uploader.rename(f, "mesh.dat")
        assert f.state is FileState.LANDED
    assert inputs(devserver, run_id) == {".mesh.tmp": sha256(b"mesh"), "mesh.dat": sha256(b"mesh")}
    assert requests(devserver, DELETE) == 0

"""The offline backend: the official client's offline cache read and written without a mount.

The caches are written by the OFFICIAL simvue client (``Run(mode="offline")`` in a
subprocess, ``tests/offline_util.py``; the fixtures ``official_cache``, ``offline_cache`` and
``offline_run_id`` are in ``tests/conftest.py``); what simvuefs writes is compared byte for
byte with what the official client writes. Also the offline settings. Mounted offline caches
are ``tests/mount/test_offline.py``; ``simvuefs mount --offline`` refusing an unusable cache
or server options is ``tests/mount/test_mount_refusals.py``.
"""

from __future__ import annotations

import errno
import json
import logging
import mimetypes
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import sha256
from offline_util import (
    BAD_ARTIFACTS,
    BAD_RUNS,
    OBJECT,
    RUN_FOLDER,
    RUN_NAME,
    OfflineOfficial,
    expected_by_category,
    snapshot_of,
    write_old,
)

from simvuefs.backends import offline_drafts
from simvuefs.backends.offline import OfflineClient
from simvuefs.backends.offline_drafts import Drafts
from simvuefs.config import Settings, resolve_offline_directory
from simvuefs.errors import AuthError, ConfigError, IntegrityError, LocalError, NotFound


@pytest.fixture
async def client(offline_cache: Path) -> AsyncIterator[OfflineClient]:
    async with OfflineClient.open(Settings.for_offline(offline_cache)) as opened:
        yield opened


def read(path: Path) -> bytes | None:
    """The content of *path*, None if there is no such file."""
    return path.read_bytes() if path.exists() else None


def record(cache: Path, artifact_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((cache / "artifacts" / f"{artifact_id}.json").read_bytes())
    return data


async def land(client: OfflineClient, run_id: str, name: str, content: bytes, tmp: Path) -> str:
    """Run the uploader's sequence for *content*; return the artifact id."""
    source = tmp / f"spooled-{sha256(content)[:8]}"
    source.write_bytes(content)
    slot = await client.create_artifact(
        name=name,
        original_path=f"simvuefs://{run_id}/input/{name}",
        size=len(content),
        mime_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        checksum=sha256(content),
    )
    await client.upload_content(slot, source, len(content), Path(name).name)
    await client.mark_uploaded(slot.artifact_id)
    await client.attach(run_id, slot.artifact_id, "input")
    assert (await client.get_artifact(slot.artifact_id)).name == name
    return slot.artifact_id


# -- reading the official client's cache ------------------------------------------------------


async def test_official_offline_run_is_listed_with_its_content(
    client: OfflineClient, offline_cache: Path, offline_run_id: str
) -> None:
    [run] = await client.list_runs()
    assert (run.id, run.name, run.folder, run.status) == (
        offline_run_id,
        RUN_NAME,
        RUN_FOLDER,
        "completed",
    )
    assert run.created is not None
    assert await client.get_run(offline_run_id) == run
    for category, files in expected_by_category().items():
        artifacts = await client.list_artifacts(offline_run_id, category)
        listed = {a.name: a for a in artifacts if not a.is_object}
        assert set(listed) == set(files)
        for name, content in files.items():
            artifact = listed[name]
            assert (artifact.category, artifact.size) == (category, len(content))
            assert artifact.checksum == sha256(content)
            assert artifact.created is not None
            assert await client.read_range(artifact, 0, len(content) + 10) == content
            async with client.open_range(artifact, 3, 2 * 1024 * 1024) as body:
                received = b""
                while chunk := await body.receive(1 << 20):
                    received += chunk
            assert received == content[3 : 2 * 1024 * 1024 + 1]
    value, category, name = OBJECT
    [state] = await client.list_artifacts(offline_run_id, category, name)
    serialized = json.dumps(value).encode()
    blob = offline_cache / "artifacts" / f"{state.id}.object"
    assert blob.read_bytes() == serialized
    assert state.is_object
    assert state.size == len(serialized) + 33  # the client's sys.getsizeof
    assert await client.content_length(state) == len(serialized)
    assert await client.read_range(state, 0, 1000) == serialized
    source, counters = client.counters()  # what `simvuefs status` shows of this backend
    assert source == "offline"
    assert set(counters) == {"bytes_read", "files_opened", "artifacts_created"}
    assert counters["bytes_read"] >= len(serialized)


async def test_records_written_meanwhile_appear(
    client: OfflineClient, offline_cache: Path, tmp_path: Path
) -> None:
    assert len(await client.list_runs()) == 1
    (tmp_path / "later.txt").write_bytes(b"later")
    later = OfflineOfficial(tmp_path, offline_cache).create_run(
        name="later run", files=[["later.txt", "input", None]]
    )
    runs = {run.name: run for run in await client.list_runs()}
    assert set(runs) == {RUN_NAME, "later run"}
    [artifact] = await client.list_artifacts(later["id"], "input")
    assert await client.read_range(artifact, 0, 100) == b"later"


# -- bad input --------------------------------------------------------------------------------


async def test_unusable_records_are_skipped_with_a_rate_limited_warning(
    client: OfflineClient,
    offline_cache: Path,
    offline_run_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, data in BAD_RUNS.items():
        write_old(offline_cache / "runs" / f"{name}.json", data)
    for name, data in BAD_ARTIFACTS.items():
        write_old(offline_cache / "artifacts" / f"{name}.json", data)
    with caplog.at_level(logging.DEBUG, logger="simvuefs.backends.offline_cache"):
        assert [run.id for run in await client.list_runs()] == [offline_run_id]
        assert len(await client.list_artifacts(offline_run_id)) == 6
        skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped) == len(BAD_RUNS) + len(BAD_ARTIFACTS)
        assert [r.levelno for r in skipped].count(logging.WARNING) == 1  # rate limited
        caplog.clear()
        await client.list_runs()
        await client.list_artifacts(offline_run_id)
        assert not caplog.records  # unchanged files are not parsed (nor reported) again


async def test_a_record_being_written_is_skipped_quietly_until_complete(
    client: OfflineClient, offline_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = offline_cache / "runs" / "offline_new.json"
    path.write_bytes(b'{"obj_type": "Run", "na')
    with caplog.at_level(logging.WARNING):
        assert len(await client.list_runs()) == 1
    assert not caplog.records
    path.write_bytes(b'{"obj_type": "Run", "name": "new", "status": "running"}')
    assert {run.name for run in await client.list_runs()} == {RUN_NAME, "new"}


async def test_missing_or_changed_content_is_eio(
    client: OfflineClient, offline_cache: Path, offline_run_id: str, tmp_path: Path
) -> None:
    artifacts = {a.name: a for a in await client.list_artifacts(offline_run_id)}
    moved = tmp_path / "moved.txt"
    moved.write_bytes(b"input parameters\nalpha = 1\n")
    in_txt = offline_cache / "artifacts" / f"{artifacts['in.txt'].id}.json"
    data = json.loads(in_txt.read_bytes())
    write_old(in_txt, json.dumps({**data, "original_path": str(moved)}).encode())
    artifacts = {a.name: a for a in await client.list_artifacts(offline_run_id)}
    assert await client.read_range(artifacts["in.txt"], 0, 100) == moved.read_bytes()

    moved.write_bytes(b"changed")
    with pytest.raises(LocalError, match="changed since") as changed:
        await client.read_range(artifacts["in.txt"], 0, 100)
    moved.unlink()
    with pytest.raises(LocalError, match="missing") as missing:
        async with client.open_range(artifacts["in.txt"], 0):
            pass
    (offline_cache / "artifacts" / f"{artifacts['summary'].id}.object").unlink()
    with pytest.raises(LocalError) as no_object:
        await client.content_length(artifacts["summary"])
    assert changed.value.errno == missing.value.errno == no_object.value.errno == errno.EIO


async def test_a_missing_or_unusable_cache_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^offline cache directory {tmp_path}/nope does not"):
        async with OfflineClient.open(Settings.for_offline(tmp_path / "nope")):
            pass
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        async with OfflineClient.open(Settings.for_offline(tmp_path / "file")):
            pass


# -- writing ----------------------------------------------------------------------------------

OFFICIAL_SNAPSHOT = """
import json, sys
from pathlib import Path
from simvue.api.objects.artifact.file import FileArtifact
artifact = FileArtifact.new(name=sys.argv[1], storage=None, file_path=Path(sys.argv[2]),
                            mime_type=None, metadata=None, offline=True, snapshot=True)
artifact.attach_to_run(sys.argv[3], "input")
print("RESULT: " + json.dumps(artifact.id))
"""
SNAPSHOT_NAME = re.compile(r"mesh_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{3}\.file")


async def test_written_record_is_the_official_clients_byte_for_byte(
    client: OfflineClient, offline_cache: Path, offline_run_id: str, tmp_path: Path
) -> None:
    content = b"written through the mount\n" * 100
    ours = await land(client, offline_run_id, "grid/mesh.bin", content, tmp_path)

    theirs_cache = tmp_path / "theirs"
    (tmp_path / "mesh.bin").write_bytes(content)
    theirs = OfflineOfficial(tmp_path, theirs_cache).script(
        OFFICIAL_SNAPSHOT, "grid/mesh.bin", "mesh.bin", offline_run_id
    )
    our_bytes = (offline_cache / "artifacts" / f"{ours}.json").read_bytes()
    their_bytes = (theirs_cache / "artifacts" / f"{theirs}.json").read_bytes()
    our_snapshot = Path(json.loads(our_bytes)["file_path"])
    their_snapshot = json.loads(their_bytes)["file_path"]
    assert our_bytes == their_bytes.replace(their_snapshot.encode(), str(our_snapshot).encode())
    assert re.fullmatch(r"offline_[0-9a-f-]{36}", ours)
    assert our_snapshot.parent == offline_cache / "artifacts"
    assert SNAPSHOT_NAME.fullmatch(our_snapshot.name)
    assert read(our_snapshot) == content

    artifact = await client.get_artifact(ours)
    assert (artifact.name, artifact.size, artifact.checksum) == (
        "grid/mesh.bin",
        len(content),
        sha256(content),
    )
    listed = await client.list_artifacts(offline_run_id, "input", "grid/mesh.bin")
    assert [a.id for a in listed] == [ours]
    assert await client.read_range(listed[0], 0, len(content)) == content


async def test_records_the_mount_did_not_create_are_never_changed(
    client: OfflineClient, offline_cache: Path, offline_run_id: str, tmp_path: Path
) -> None:
    before = snapshot_of(offline_cache)
    official_ids = [a.id for a in await client.list_artifacts(offline_run_id)]
    ours = await land(client, offline_run_id, "new.txt", b"new", tmp_path)
    for artifact_id in official_ids:
        with pytest.raises(AuthError):
            await client.delete_artifact(artifact_id)
        with pytest.raises(NotFound):
            await client.attach(offline_run_id, artifact_id, "input")
    after = snapshot_of(offline_cache)
    assert {path: after.get(path) for path in before} == before
    snapshot = Path(record(offline_cache, ours)["file_path"]).name
    assert set(after) - set(before) == {
        f"artifacts/{ours}.json",
        f"artifacts/{snapshot}",
        f"simvuefs/created/{ours}.json",
    }
    await client.delete_artifact(ours)
    assert snapshot_of(offline_cache) == before


async def test_delete_removes_an_artifact_the_mount_created(
    client: OfflineClient, offline_cache: Path, offline_run_id: str, tmp_path: Path
) -> None:
    ours = await land(client, offline_run_id, "old-name.txt", b"renamed", tmp_path)
    snapshot = Path(record(offline_cache, ours)["file_path"])
    await client.delete_artifact(ours)
    assert not (offline_cache / "artifacts" / f"{ours}.json").exists()
    assert read(snapshot) is None
    with pytest.raises(NotFound):
        await client.get_artifact(ours)
    assert "old-name.txt" not in {a.name for a in await client.list_artifacts(offline_run_id)}


async def test_attach_needs_a_run_the_sender_can_map(
    client: OfflineClient, offline_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(NotFound, match="no run offline_gone"):
        await land(client, "offline_gone", "x.txt", b"x", tmp_path)
    (offline_cache / "server_ids").mkdir(exist_ok=True)
    (offline_cache / "server_ids" / "offline_sent.txt").write_text("online-id")
    await land(client, "offline_sent", "y.txt", b"y", tmp_path)  # sent, still mappable


async def test_steps_resume_from_the_cache_after_a_restart(
    offline_cache: Path, offline_run_id: str, tmp_path: Path
) -> None:
    settings = Settings.for_offline(offline_cache)
    source = tmp_path / "content"
    source.write_bytes(b"resumed")
    async with OfflineClient.open(settings) as first:
        stored = await first.create_artifact(
            name="r.txt",
            original_path="",
            size=7,
            mime_type="text/plain",
            checksum=sha256(b"resumed"),
        )
        await first.upload_content(stored, source, 7, "r.txt")
        unstored = await first.create_artifact(
            name="u.txt", original_path="", size=1, mime_type="text/plain", checksum=sha256(b"u")
        )
    async with OfflineClient.open(settings) as second:  # tidies the draft never stored
        await second.attach(offline_run_id, stored.artifact_id, "input")
        assert (await second.get_artifact(stored.artifact_id)).name == "r.txt"
        with pytest.raises(NotFound):
            await second.attach(offline_run_id, unstored.artifact_id, "input")
    assert record(offline_cache, stored.artifact_id)["runs"] == {offline_run_id: "input"}


# -- configuration ----------------------------------------------------------------------------


def test_offline_directory_is_resolved_without_server_settings(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    assert resolve_offline_directory(cwd=work, env={}, home=home) == home / ".simvue"
    (work / "simvue.toml").write_text('[offline]\ncache = "~/cache"\n')
    assert resolve_offline_directory(cwd=work, env={}, home=home) == home / "cache"
    env = {"SIMVUE_OFFLINE_DIRECTORY": "rel"}
    assert resolve_offline_directory(cwd=work, env=env, home=home) == work / "rel"


def test_offline_settings_list_finished_runs_as_often_as_others(tmp_path: Path) -> None:
    settings = Settings.for_offline(tmp_path, metadata_ttl=5.0)
    assert (settings.finished_run_ttl, settings.spool_dir) == (5.0, tmp_path / "simvuefs/spool")
    assert Settings.for_offline(tmp_path, finished_run_ttl=9.0).finished_run_ttl == 9.0


def test_a_snapshot_that_cannot_be_linked_is_a_checked_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spooled content on another filesystem than the cache: copied, size and sha256 checked
    on the way; a mismatch leaves neither the snapshot's content nor the temporary file."""

    def no_link(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(offline_drafts.os, "link", no_link)
    content = b"spooled content\n" * 1000
    source, snapshot, temp = tmp_path / "spooled", tmp_path / "snapshot", tmp_path / "s.tmp"
    source.write_bytes(content)
    Drafts._fill(source, snapshot, len(content), sha256(content), temp)
    assert snapshot.read_bytes() == content
    assert not temp.exists()
    with pytest.raises(IntegrityError, match="changed"):
        Drafts._fill(source, tmp_path / "other", len(content), sha256(b"else"), temp)
    with pytest.raises(IntegrityError, match="changed"):
        Drafts._fill(source, tmp_path / "other", len(content) + 1, sha256(content), temp)
    assert not temp.exists()
    assert not (tmp_path / "other").exists()

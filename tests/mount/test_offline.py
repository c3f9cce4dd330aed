"""Offline mode: the official client's offline cache as a backend, and mounted with FUSE.

The caches are written by the OFFICIAL simvue client (``Run(mode="offline")`` in a
subprocess, tests/offline_util.py); what simvuefs writes is compared byte for byte with
what the official client writes, and sent to a devserver with the official sender.
"""

from __future__ import annotations

import errno
import json
import logging
import mimetypes
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fuse_util import is_mounted, mounted, run_tool, wait_until
from official_util import sha256
from offline_util import (
    OBJECT,
    RUN_FOLDER,
    RUN_NAME,
    OfflineOfficial,
    expected_by_category,
    make_official_run,
    snapshot_of,
)

from simvuefs.backends.offline import OfflineClient
from simvuefs.config import Settings, resolve_offline_directory
from simvuefs.errors import AuthError, ConfigError, LocalError, NotFound

OLD = time.time() - 3600  # an mtime long past SETTLE_SECONDS


@pytest.fixture(scope="session")
def official_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An offline cache holding one official offline run (shared: copy it to change it)."""
    workdir = tmp_path_factory.mktemp("official")
    cache = workdir / "cache"
    run = make_official_run(workdir, cache)
    return cache, run


@pytest.fixture
def cache(official_cache: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A private copy of the official cache."""
    copy = tmp_path / "cache"
    shutil.copytree(official_cache[0], copy)
    return copy


@pytest.fixture
def run_id(official_cache: tuple[Path, dict[str, Any]]) -> str:
    identifier: str = official_cache[1]["id"]
    return identifier


@pytest.fixture
async def client(cache: Path) -> AsyncIterator[OfflineClient]:
    async with OfflineClient.open(Settings.for_offline(cache)) as opened:
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
    assert await client.get_artifact_name(slot.artifact_id) == name
    return slot.artifact_id


# -- reading the official client's cache ------------------------------------------------------


async def test_official_offline_run_is_listed_with_its_content(
    client: OfflineClient, cache: Path, run_id: str
) -> None:
    [run] = await client.list_runs()
    assert (run.id, run.name, run.folder, run.status) == (run_id, RUN_NAME, RUN_FOLDER, "completed")
    assert run.created is not None
    assert await client.get_run(run_id) == run
    for category, files in expected_by_category().items():
        artifacts = await client.list_artifacts(run_id, category)
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
    [state] = await client.list_artifacts(run_id, category, name)
    serialized = json.dumps(value).encode()
    blob = cache / "artifacts" / f"{state.id}.object"
    assert blob.read_bytes() == serialized
    assert state.is_object
    assert state.size == len(serialized) + 33  # the client's sys.getsizeof
    assert await client.content_length(state) == len(serialized)
    assert await client.read_range(state, 0, 1000) == serialized


async def test_records_written_meanwhile_appear(
    client: OfflineClient, cache: Path, tmp_path: Path
) -> None:
    assert len(await client.list_runs()) == 1
    (tmp_path / "later.txt").write_bytes(b"later")
    later = OfflineOfficial(tmp_path, cache).create_run(
        name="later run", files=[["later.txt", "input", None]]
    )
    runs = {run.name: run for run in await client.list_runs()}
    assert set(runs) == {RUN_NAME, "later run"}
    [artifact] = await client.list_artifacts(later["id"], "input")
    assert await client.read_range(artifact, 0, 100) == b"later"


# -- bad input --------------------------------------------------------------------------------


BAD_RUNS = {
    "not-json": b"{not json",
    "a-list": b"[]",
    "no-name": b'{"obj_type": "Run", "status": "running"}',
}
BAD_ARTIFACTS = {
    "not-json": b"\x00\xff",
    "unknown-type": b'{"obj_type": "Tag", "name": "x", "runs": {}}',
    "runs-not-a-dict": b'{"obj_type": "FileArtifact", "name": "x", "original_path": "/x", '
    b'"runs": "input"}',
    "no-path": b'{"obj_type": "FileArtifact", "name": "x", "runs": {}}',
}


def write_old(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))


async def test_unusable_records_are_skipped_with_a_rate_limited_warning(
    client: OfflineClient, cache: Path, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    for name, data in BAD_RUNS.items():
        write_old(cache / "runs" / f"{name}.json", data)
    for name, data in BAD_ARTIFACTS.items():
        write_old(cache / "artifacts" / f"{name}.json", data)
    with caplog.at_level(logging.DEBUG, logger="simvuefs.backends.offline_cache"):
        assert [run.id for run in await client.list_runs()] == [run_id]
        assert len(await client.list_artifacts(run_id)) == 6
        skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped) == len(BAD_RUNS) + len(BAD_ARTIFACTS)
        assert [r.levelno for r in skipped].count(logging.WARNING) == 1  # rate limited
        caplog.clear()
        await client.list_runs()
        await client.list_artifacts(run_id)
        assert not caplog.records  # unchanged files are not parsed (nor reported) again


async def test_a_record_being_written_is_skipped_quietly_until_complete(
    client: OfflineClient, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = cache / "runs" / "offline_new.json"
    path.write_bytes(b'{"obj_type": "Run", "na')
    with caplog.at_level(logging.WARNING):
        assert len(await client.list_runs()) == 1
    assert not caplog.records
    path.write_bytes(b'{"obj_type": "Run", "name": "new", "status": "running"}')
    assert {run.name for run in await client.list_runs()} == {RUN_NAME, "new"}


async def test_missing_or_changed_content_is_eio(
    client: OfflineClient, cache: Path, run_id: str, tmp_path: Path
) -> None:
    artifacts = {a.name: a for a in await client.list_artifacts(run_id)}
    moved = tmp_path / "moved.txt"
    moved.write_bytes(b"input parameters\nalpha = 1\n")
    in_txt = cache / "artifacts" / f"{artifacts['in.txt'].id}.json"
    data = json.loads(in_txt.read_bytes())
    write_old(in_txt, json.dumps({**data, "original_path": str(moved)}).encode())
    artifacts = {a.name: a for a in await client.list_artifacts(run_id)}
    assert await client.read_range(artifacts["in.txt"], 0, 100) == moved.read_bytes()

    moved.write_bytes(b"changed")
    with pytest.raises(LocalError, match="changed since") as changed:
        await client.read_range(artifacts["in.txt"], 0, 100)
    moved.unlink()
    with pytest.raises(LocalError, match="missing") as missing:
        async with client.open_range(artifacts["in.txt"], 0):
            pass
    (cache / "artifacts" / f"{artifacts['summary'].id}.object").unlink()
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
    client: OfflineClient, cache: Path, run_id: str, tmp_path: Path
) -> None:
    content = b"written through the mount\n" * 100
    ours = await land(client, run_id, "grid/mesh.bin", content, tmp_path)

    theirs_cache = tmp_path / "theirs"
    (tmp_path / "mesh.bin").write_bytes(content)
    theirs = OfflineOfficial(tmp_path, theirs_cache).script(
        OFFICIAL_SNAPSHOT, "grid/mesh.bin", "mesh.bin", run_id
    )
    our_bytes = (cache / "artifacts" / f"{ours}.json").read_bytes()
    their_bytes = (theirs_cache / "artifacts" / f"{theirs}.json").read_bytes()
    our_snapshot = Path(json.loads(our_bytes)["file_path"])
    their_snapshot = json.loads(their_bytes)["file_path"]
    assert our_bytes == their_bytes.replace(their_snapshot.encode(), str(our_snapshot).encode())
    assert re.fullmatch(r"offline_[0-9a-f-]{36}", ours)
    assert our_snapshot.parent == cache / "artifacts"
    assert SNAPSHOT_NAME.fullmatch(our_snapshot.name)
    assert read(our_snapshot) == content

    artifact = await client.get_artifact(ours)
    assert (artifact.name, artifact.size, artifact.checksum) == (
        "grid/mesh.bin",
        len(content),
        sha256(content),
    )
    listed = await client.list_artifacts(run_id, "input", "grid/mesh.bin")
    assert [a.id for a in listed] == [ours]
    assert await client.read_range(listed[0], 0, len(content)) == content


async def test_records_the_mount_did_not_create_are_never_changed(
    client: OfflineClient, cache: Path, run_id: str, tmp_path: Path
) -> None:
    before = snapshot_of(cache)
    official_ids = [a.id for a in await client.list_artifacts(run_id)]
    ours = await land(client, run_id, "new.txt", b"new", tmp_path)
    for artifact_id in official_ids:
        with pytest.raises(AuthError):
            await client.delete_artifact(artifact_id)
        with pytest.raises(NotFound):
            await client.attach(run_id, artifact_id, "input")
    after = snapshot_of(cache)
    assert {path: after.get(path) for path in before} == before
    snapshot = Path(record(cache, ours)["file_path"]).name
    assert set(after) - set(before) == {
        f"artifacts/{ours}.json",
        f"artifacts/{snapshot}",
        f"simvuefs/created/{ours}.json",
    }
    await client.delete_artifact(ours)
    assert snapshot_of(cache) == before


async def test_delete_removes_an_artifact_the_mount_created(
    client: OfflineClient, cache: Path, run_id: str, tmp_path: Path
) -> None:
    ours = await land(client, run_id, "old-name.txt", b"renamed", tmp_path)
    snapshot = Path(record(cache, ours)["file_path"])
    await client.delete_artifact(ours)
    assert not (cache / "artifacts" / f"{ours}.json").exists()
    assert read(snapshot) is None
    with pytest.raises(NotFound):
        await client.get_artifact(ours)
    assert "old-name.txt" not in {a.name for a in await client.list_artifacts(run_id)}


async def test_attach_needs_a_run_the_sender_can_map(
    client: OfflineClient, cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(NotFound, match="no run offline_gone"):
        await land(client, "offline_gone", "x.txt", b"x", tmp_path)
    (cache / "server_ids").mkdir(exist_ok=True)
    (cache / "server_ids" / "offline_sent.txt").write_text("online-id")
    await land(client, "offline_sent", "y.txt", b"y", tmp_path)  # sent, still mappable


async def test_steps_resume_from_the_cache_after_a_restart(
    cache: Path, run_id: str, tmp_path: Path
) -> None:
    settings = Settings.for_offline(cache)
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
        await second.attach(run_id, stored.artifact_id, "input")
        assert (await second.get_artifact(stored.artifact_id)).name == "r.txt"
        with pytest.raises(NotFound):
            await second.attach(run_id, unstored.artifact_id, "input")
    assert record(cache, stored.artifact_id)["runs"] == {run_id: "input"}


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


# -- real mounts ------------------------------------------------------------------------------


def view(root: Path) -> dict[str, tuple[Any, ...]]:
    """What a run directory shows: {relative path: (mode, size, checksum, MIME, sha256)}."""
    shown: dict[str, tuple[Any, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(directory, name)
            shown[str(path.relative_to(root))] = (stat.S_IMODE(path.stat().st_mode),)
        for name in files:
            path = Path(directory, name)
            info = path.stat()
            shown[str(path.relative_to(root))] = (
                stat.S_IMODE(info.st_mode),
                info.st_size,
                os.getxattr(path, "user.simvue.checksum").decode(),
                os.getxattr(path, "user.simvue.mime_type").decode(),
                sha256(path.read_bytes()),
            )
    return shown


def expected_view() -> dict[str, tuple[Any, ...]]:
    """The files of the official run as ``view`` shows them (modes aside)."""
    shown: dict[str, tuple[Any, ...]] = {}
    for category, files in expected_by_category().items():
        for name, content in files.items():
            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
            shown[f"{category}/{name}"] = (len(content), sha256(content), mime, sha256(content))
    value, category, name = OBJECT
    serialized = json.dumps(value).encode()
    shown[f"{category}/{name}"] = (
        len(serialized),
        sha256(serialized),
        "application/json",
        sha256(serialized),
    )
    return shown


def files_of(shown: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    return {path: values[1:] for path, values in shown.items() if len(values) > 1}


@pytest.mark.fuse
def test_offline_mount_shows_the_official_run(
    official_cache: tuple[Path, dict[str, Any]],
    cache: Path,
    run_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIMVUE_OFFLINE_DIRECTORY", str(cache))  # --offline without a directory
    for name in ("SIMVUE_URL", "SIMVUE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no config file, no server, no token
    with mounted(None, tmp_path, "--offline") as mount:
        runs = mount.path / "runs"
        assert os.listdir(runs) == [RUN_NAME]
        run = runs / RUN_NAME
        assert sorted(os.listdir(run)) == ["code", "input", "output"]
        assert files_of(view(run)) == expected_view()
        assert os.getxattr(run, "user.simvue.id").decode() == run_id
        assert os.getxattr(run, "user.simvue.status") == b"completed"
        assert os.getxattr(run, "user.simvue.folder").decode() == RUN_FOLDER
        in_txt = run / "input" / "in.txt"
        assert os.getxattr(in_txt, "user.simvue.run_id").decode() == run_id
        original = os.getxattr(in_txt, "user.simvue.original_path").decode()
        assert original == str(official_cache[0].parent / "in.txt")
        with open(run / "output" / "data" / "big.bin", "rb") as big:
            big.seek(1_000_000)
            assert big.read(10) == expected_by_category()["output"]["data/big.bin"][1_000_000:][:10]


@pytest.mark.fuse
def test_files_written_offline_are_sent_to_their_run(
    cache: Path, run_id: str, tmp_path: Path, devserver: Any
) -> None:
    before = snapshot_of(cache)
    content = os.urandom(2 * 1024 * 1024 + 5)
    (tmp_path / "source.dat").write_bytes(content)
    (tmp_path / "params.nml").write_bytes(b"&params n = 3 /\n")
    (tmp_path / "offline").mkdir()
    with mounted(None, tmp_path / "offline", "--offline", str(cache)) as mount:
        run = mount.path / "runs" / RUN_NAME
        run_tool(["cp", tmp_path / "source.dat", run / "input" / "new.dat"])
        # rsync writes a temporary name, then renames it: the first record is replaced
        run_tool(["rsync", tmp_path / "params.nml", run / "input" / "params.nml"])
        assert (run / "input" / "new.dat").read_bytes() == content
        offline_view = view(run)
    after = snapshot_of(cache)
    assert {path: after.get(path) for path in before} == before  # the client's files: untouched
    new_records = [
        json.loads(after[p])
        for p in set(after) - set(before)
        if re.fullmatch(r"artifacts/[^/]*\.json", p)
    ]
    ours = {record["name"]: record for record in new_records}
    assert sorted(ours) == ["new.dat", "params.nml"]  # no record left of rsync's temporary
    assert ours["new.dat"]["runs"] == {run_id: "input"}
    snapshot = f"artifacts/{Path(ours['new.dat']['file_path']).name}"
    assert after[snapshot] == content  # kept in the cache after the unmount

    official = OfflineOfficial(tmp_path, cache, server=devserver)
    sent = official.call("send_offline")
    online_id = sent["id_mapping"][run_id]
    downloaded = official.call(
        "download", run_id=online_id, output_dir=str(tmp_path / "dl"), categories=["input"]
    )
    assert downloaded["categories"]["input"]["new.dat"] == sha256(content)
    assert downloaded["categories"]["input"]["params.nml"] == sha256(b"&params n = 3 /\n")
    assert downloaded["run"]["name"] == RUN_NAME
    assert snapshot not in snapshot_of(cache)  # sent, so the sender removed it

    online = tmp_path / "online"
    online.mkdir()
    with mounted(devserver, online) as mount:
        online_view = view(mount.path / "runs" / RUN_NAME)
    assert online_view == offline_view  # same tree, modes, sizes, checksums, MIME types


OFFICIAL_ATTACH = """
import json, sys
from pathlib import Path
from simvue.api.objects.artifact.file import FileArtifact
artifact = FileArtifact.new(name=sys.argv[1], storage=None, file_path=Path(sys.argv[2]),
                            mime_type=None, metadata=None, offline=True)
artifact.attach_to_run(sys.argv[3], "output")
print("RESULT: " + json.dumps(artifact.id))
"""


@pytest.mark.fuse
def test_runs_and_artifacts_the_client_writes_appear_within_the_ttl(
    cache: Path, run_id: str, tmp_path: Path
) -> None:
    with mounted(None, tmp_path, "--offline", str(cache)) as mount:
        runs = mount.path / "runs"
        assert os.listdir(runs / RUN_NAME / "output")  # listed (and cached) before the change
        official = OfflineOfficial(tmp_path, cache)
        (tmp_path / "later.txt").write_bytes(b"later")
        official.create_run(name="later run", files=[["later.txt", "input", None]])
        official.script(OFFICIAL_ATTACH, "added.txt", "later.txt", run_id)
        written = time.monotonic()
        assert wait_until(lambda: "later run" in os.listdir(runs), 5)
        assert wait_until(lambda: "added.txt" in os.listdir(runs / RUN_NAME / "output"), 5)
        assert time.monotonic() - written < 3.0  # metadata TTL (1 s) plus slack
        assert (runs / "later run" / "input" / "later.txt").read_bytes() == b"later"
        assert (runs / RUN_NAME / "output" / "added.txt").read_bytes() == b"later"


@pytest.mark.fuse
def test_bad_records_are_skipped_and_missing_content_is_eio(
    cache: Path, run_id: str, tmp_path: Path
) -> None:
    for name, data in BAD_RUNS.items():
        write_old(cache / "runs" / f"{name}.json", data)
    for name, data in BAD_ARTIFACTS.items():
        write_old(cache / "artifacts" / f"{name}.json", data)
    lost = {
        "obj_type": "FileArtifact",
        "name": "lost.txt",
        "storage": None,
        "original_path": str(tmp_path / "gone.txt"),
        "size": 4,
        "mime_type": "text/plain",
        "checksum": sha256(b"gone"),
        "metadata": None,
        "file_path": "gone.txt",
        "runs": {run_id: "input"},
    }
    write_old(cache / "artifacts" / "offline_lost.json", json.dumps(lost).encode())
    (tmp_path / "changed.txt").write_bytes(b"GONE")  # same size, other bytes
    changed = {**lost, "name": "changed.txt", "original_path": str(tmp_path / "changed.txt")}
    write_old(cache / "artifacts" / "offline_changed.json", json.dumps(changed).encode())
    before = snapshot_of(cache)
    with mounted(None, tmp_path, "--offline", str(cache)) as mount:
        run = mount.path / "runs" / RUN_NAME
        assert os.listdir(mount.path / "runs") == [RUN_NAME]
        assert "lost.txt" in os.listdir(run / "input")
        assert (run / "input" / "lost.txt").stat().st_size == 4
        with pytest.raises(OSError, match="Input/output error") as caught:
            (run / "input" / "lost.txt").read_bytes()
        assert caught.value.errno == errno.EIO
        with pytest.raises(OSError, match="Input/output error"):
            (run / "input" / "changed.txt").read_bytes()  # the checksum does not match
        assert (run / "input" / "in.txt").read_bytes() == expected_by_category()["input"]["in.txt"]
        log = mount.log_tail()
    assert "skipped" in log
    assert "Traceback" not in log
    assert snapshot_of(cache) == before


@pytest.mark.fuse
@pytest.mark.parametrize("foreground", [False, True])
def test_a_missing_cache_directory_fails_in_one_line(tmp_path: Path, foreground: bool) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    argv = [sys.executable, "-m", "simvuefs", "mount", mountpoint, "--offline", tmp_path / "nope"]
    argv += ["--log-file", tmp_path / "log"] + (["--foreground"] if foreground else [])
    result = run_tool(argv, check=False)
    assert result.returncode != 0
    lines = result.stderr.decode().splitlines()
    assert lines == [f"simvuefs: offline cache directory {tmp_path / 'nope'} does not exist"]
    assert not is_mounted(mountpoint)


def test_offline_refuses_server_options(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    argv = [sys.executable, "-m", "simvuefs", "mount", mountpoint, "--offline", tmp_path]
    argv += ["--url", "http://127.0.0.1:9", "--foreground", "--log-file", tmp_path / "log"]
    result = run_tool(argv, check=False)
    assert result.returncode != 0
    assert result.stderr.decode().splitlines() == [
        "simvuefs: --offline mounts a cache, not a server: drop --url and --profile"
    ]

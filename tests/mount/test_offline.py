"""Offline mounts: the official client's offline cache mounted with FUSE.

The caches are written by the OFFICIAL simvue client (``Run(mode="offline")`` in a
subprocess, ``tests/offline_util.py``; the fixtures ``official_cache``, ``offline_cache`` and
``offline_run_id`` are in ``tests/conftest.py``): the mount shows the official run as an
online mount shows it once sent, files written into it are sent to their run by the official
sender, records written meanwhile appear within the TTL, and bad records are skipped. The
offline backend without a mount is ``tests/unit/test_offline_backend.py``.
"""

from __future__ import annotations

import errno
import json
import mimetypes
import os
import re
import stat
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

from testbed.mounts import mounted
from testbed.processes import run_tool, wait_until


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


def test_offline_mount_shows_the_official_run(
    official_cache: tuple[Path, dict[str, Any]],
    offline_cache: Path,
    offline_run_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --offline without a directory: the cache is found through the environment
    monkeypatch.setenv("SIMVUE_OFFLINE_DIRECTORY", str(offline_cache))
    for name in ("SIMVUE_URL", "SIMVUE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no config file, no server, no token
    with mounted(None, tmp_path, "--offline") as mount:
        runs = mount.path / "runs"
        assert os.listdir(runs) == [RUN_NAME]
        run = runs / RUN_NAME
        assert sorted(os.listdir(run)) == ["code", "input", "output"]
        assert files_of(view(run)) == expected_view()
        assert os.getxattr(run, "user.simvue.id").decode() == offline_run_id
        assert os.getxattr(run, "user.simvue.status") == b"completed"
        assert os.getxattr(run, "user.simvue.folder").decode() == RUN_FOLDER
        in_txt = run / "input" / "in.txt"
        assert os.getxattr(in_txt, "user.simvue.run_id").decode() == offline_run_id
        original = os.getxattr(in_txt, "user.simvue.original_path").decode()
        assert original == str(official_cache[0].parent / "in.txt")
        with open(run / "output" / "data" / "big.bin", "rb") as big:
            big.seek(1_000_000)
            assert big.read(10) == expected_by_category()["output"]["data/big.bin"][1_000_000:][:10]


def test_files_written_offline_are_sent_to_their_run(
    offline_cache: Path, offline_run_id: str, tmp_path: Path, devserver: Any
) -> None:
    before = snapshot_of(offline_cache)
    content = os.urandom(2 * 1024 * 1024 + 5)
    (tmp_path / "source.dat").write_bytes(content)
    (tmp_path / "params.nml").write_bytes(b"&params n = 3 /\n")
    (tmp_path / "offline").mkdir()
    with mounted(None, tmp_path / "offline", "--offline", str(offline_cache)) as mount:
        run = mount.path / "runs" / RUN_NAME
        run_tool(["cp", tmp_path / "source.dat", run / "input" / "new.dat"])
        # rsync writes a temporary name, then renames it: the first record is replaced
        run_tool(["rsync", tmp_path / "params.nml", run / "input" / "params.nml"])
        assert (run / "input" / "new.dat").read_bytes() == content
        offline_view = view(run)
    after = snapshot_of(offline_cache)
    assert {path: after.get(path) for path in before} == before  # the client's files: untouched
    new_records = [
        json.loads(after[p])
        for p in set(after) - set(before)
        if re.fullmatch(r"artifacts/[^/]*\.json", p)
    ]
    ours = {record["name"]: record for record in new_records}
    assert sorted(ours) == ["new.dat", "params.nml"]  # no record left of rsync's temporary
    assert ours["new.dat"]["runs"] == {offline_run_id: "input"}
    snapshot = f"artifacts/{Path(ours['new.dat']['file_path']).name}"
    assert after[snapshot] == content  # kept in the cache after the unmount

    official = OfflineOfficial(tmp_path, offline_cache, server=devserver)
    sent = official.call("send_offline")
    online_id = sent["id_mapping"][offline_run_id]
    downloaded = official.call(
        "download", run_id=online_id, output_dir=str(tmp_path / "dl"), categories=["input"]
    )
    assert downloaded["categories"]["input"]["new.dat"] == sha256(content)
    assert downloaded["categories"]["input"]["params.nml"] == sha256(b"&params n = 3 /\n")
    assert downloaded["run"]["name"] == RUN_NAME
    assert snapshot not in snapshot_of(offline_cache)  # sent, so the sender removed it

    online = tmp_path / "online"
    online.mkdir()
    with mounted(devserver, online) as mount:
        online_view = view(mount.path / "runs" / RUN_NAME)
    # the files just written stay writable for their writer for LANDED_RETENTION seconds
    # (SEMANTICS, "Upload at close"); the online mount did not write them
    for written in ("input/new.dat", "input/params.nml"):
        assert offline_view[written][0] == 0o644
        offline_view[written] = (0o444, *offline_view[written][1:])
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


def test_runs_and_artifacts_the_client_writes_appear_within_the_ttl(
    offline_cache: Path, offline_run_id: str, tmp_path: Path
) -> None:
    with mounted(None, tmp_path, "--offline", str(offline_cache)) as mount:
        runs = mount.path / "runs"
        assert os.listdir(runs / RUN_NAME / "output")  # listed (and cached) before the change
        official = OfflineOfficial(tmp_path, offline_cache)
        (tmp_path / "later.txt").write_bytes(b"later")
        official.create_run(name="later run", files=[["later.txt", "input", None]])
        official.script(OFFICIAL_ATTACH, "added.txt", "later.txt", offline_run_id)
        # The metadata TTL is 1 s; the deadlines only keep a broken mount from hanging.
        assert wait_until(lambda: "later run" in os.listdir(runs), 5)
        assert wait_until(lambda: "added.txt" in os.listdir(runs / RUN_NAME / "output"), 5)
        assert (runs / "later run" / "input" / "later.txt").read_bytes() == b"later"
        assert (runs / RUN_NAME / "output" / "added.txt").read_bytes() == b"later"


def test_bad_records_are_skipped_and_missing_content_is_eio(
    offline_cache: Path, offline_run_id: str, tmp_path: Path
) -> None:
    for name, data in BAD_RUNS.items():
        write_old(offline_cache / "runs" / f"{name}.json", data)
    for name, data in BAD_ARTIFACTS.items():
        write_old(offline_cache / "artifacts" / f"{name}.json", data)
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
        "runs": {offline_run_id: "input"},
    }
    write_old(offline_cache / "artifacts" / "offline_lost.json", json.dumps(lost).encode())
    (tmp_path / "changed.txt").write_bytes(b"GONE")  # same size, other bytes
    changed = {**lost, "name": "changed.txt", "original_path": str(tmp_path / "changed.txt")}
    write_old(offline_cache / "artifacts" / "offline_changed.json", json.dumps(changed).encode())
    before = snapshot_of(offline_cache)
    with mounted(None, tmp_path, "--offline", str(offline_cache)) as mount:
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
    assert snapshot_of(offline_cache) == before

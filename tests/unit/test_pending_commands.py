"""``simvuefs pending retry|export|drop`` and ``simvuefs status`` as real commands on spools
no process holds (a mount that is gone), in a fresh interpreter that must not load pyfuse3
or httpx. A running mount's side is tested in tests/mount/test_pending_mount.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from control_util import command, pending_upload, simvuefs_process, state_dirs
from helpers import sha256

from simvuefs.control import registry
from simvuefs.write.spool import Spool, read_pending

REFUSED = b"a mesh the server refuses"
WAITING = b"results still being retried"


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dirs(tmp_path, monkeypatch)


def gone_mount(tmp_path: Path, name: str, *records: tuple[bytes, dict[str, object]]) -> Path:
    """A mount point whose daemon is gone, its spool holding *records* (content, fields)."""
    mountpoint = tmp_path / name
    mountpoint.mkdir()
    spool_dir = tmp_path / f"{name}-spool"
    for content, fields in records:
        pending_upload(spool_dir, content, checksum=sha256(content), **fields)
    Spool.open(spool_dir, min_free=0).close()  # with nothing in it if no records
    with simvuefs_process() as pid:
        pass
    registry.save(registry.MountRecord(str(mountpoint), pid, "http://h/api", str(spool_dir)))
    return mountpoint


REFUSAL = {
    "run_id": "run-7",
    "name": "sweep/mesh.dat",
    "attempts": 1,
    "failed": "EINVAL",
    "last_error": "POST /api/artifacts failed with status 422: name not allowed",
    "artifact_id": "a-1",
    "stage": "marked",
}


def test_status_lists_only_mounts_that_run_or_hold_files(tmp_path: Path) -> None:
    assert "nothing pending" in command("status")[0]
    gone_mount(tmp_path, "empty")
    assert command("status")[0] == (
        "no simvuefs mount is running or has files pending (nothing pending)\n"
    )
    kept = gone_mount(tmp_path, "kept", (REFUSED, REFUSAL))
    out, errors, report = command("status")
    assert (errors, report) == ("", "loaded: nothing exit: 0")
    assert out.startswith(f"{kept}: not mounted")
    assert "empty" not in out
    assert "1 pending upload(s), 1 failed\n" in out
    assert "run run-7: input/sweep/mesh.dat, 25 bytes, 1 failed attempt(s), stage marked" in out
    assert "    FAILED (EINVAL), not retried: POST /api/artifacts failed with status 422: " in out
    assert "'simvuefs pending retry' tries again" in out


def test_export_then_drop_then_nothing_is_left(tmp_path: Path) -> None:
    mountpoint = gone_mount(
        tmp_path, "mnt", (REFUSED, REFUSAL), (WAITING, {"run_id": "run/8", "name": "out.csv"})
    )
    spool_dir = tmp_path / "mnt-spool"
    refused, waiting = sorted(read_pending(spool_dir), key=lambda r: r.run_id)
    # dropping before an export is refused as a whole
    out, errors, report = command("pending", "drop")
    assert out == ""
    assert errors.startswith("simvuefs: not dropping anything: 1 file(s) were not exported")
    assert report == "loaded: nothing exit: 1"

    dest = tmp_path / "rescued"
    (dest / "run-7" / "input" / "sweep").mkdir(parents=True)
    (dest / "run-7" / "input" / "sweep" / "mesh.dat").write_bytes(b"someone else's file")
    out, errors, report = command("pending", "export", dest, mountpoint)
    assert (errors, report) == ("", "loaded: nothing exit: 0")
    assert out == f"2 pending upload(s) exported to {dest} (list: {dest / 'manifest.json'})\n"
    sideways = dest / "run-7" / "input" / "sweep" / f"mesh.dat~{refused.id[:8]}"
    assert sideways.read_bytes() == REFUSED  # the file already there is not overwritten
    assert (dest / "run%2F8" / "input" / "out.csv").read_bytes() == WAITING
    # the copies are as private as the spool they come from
    assert (dest / "run%2F8" / "input" / "out.csv").stat().st_mode & 0o777 == 0o600
    assert (dest / "run%2F8").stat().st_mode & 0o777 == 0o700
    manifest = {
        entry["spool_id"]: entry for entry in json.loads((dest / "manifest.json").read_bytes())
    }
    assert manifest[refused.id] | {"exported": "", "created": ""} == {
        "path": f"run-7/input/sweep/mesh.dat~{refused.id[:8]}",
        "run_id": "run-7",
        "category": "input",
        "name": "sweep/mesh.dat",
        "size": len(REFUSED),
        "sha256": sha256(REFUSED),
        "state": "failed",
        "last_error": REFUSAL["last_error"],
        "created": "",
        "exported": "",
        "server": "http://h/api",
        "mountpoint": str(mountpoint),
        "spool": str(spool_dir),
        "spool_id": refused.id,
    }
    assert manifest[waiting.id]["state"] == "pending"
    # exporting again finds the copies in place
    assert command("pending", "export", dest)[0].startswith("2 pending upload(s) exported")
    assert len(list(dest.rglob("*.*"))) == 4  # two copies, the other file, the manifest

    out, _, report = command("pending", "drop", mountpoint)
    assert out == f"{mountpoint}: 1 upload(s) dropped\n"
    assert [r.id for r in read_pending(spool_dir)] == [waiting.id]  # --all drops the rest
    out, _, report = command("pending", "drop", "--all", "--spool-dir", spool_dir)
    assert (out, report) == (f"spool {spool_dir}: 1 upload(s) dropped\n", "loaded: nothing exit: 0")
    assert read_pending(spool_dir) == []
    assert list((spool_dir / "pending").iterdir()) == []  # content and marks went too
    assert "nothing pending" in command("status")[0]


def test_drop_yes_without_export_and_a_copy_that_went_missing(tmp_path: Path) -> None:
    mountpoint = gone_mount(tmp_path, "mnt", (REFUSED, REFUSAL))
    dest = tmp_path / "out"
    command("pending", "export", dest, mountpoint)
    for copy in dest.rglob("mesh.dat"):
        copy.unlink()
    _, errors, _ = command("pending", "drop", mountpoint)
    assert "were not exported" in errors  # the copy is gone: as good as never exported
    out, _, report = command("pending", "drop", mountpoint, "--yes")
    assert (out, report) == (f"{mountpoint}: 1 upload(s) dropped\n", "loaded: nothing exit: 0")


def test_retry_clears_refusals_for_the_next_mount(tmp_path: Path) -> None:
    mountpoint = gone_mount(tmp_path, "mnt", (REFUSED, REFUSAL), (WAITING, {"name": "w.dat"}))
    out, errors, report = command("pending", "retry")
    assert (errors, report) == ("", "loaded: nothing exit: 0")
    assert out == (
        f"{mountpoint}: 2 pending upload(s) retried, 1 of them had been refused "
        "(at its next mount)\n"
    )
    records = read_pending(tmp_path / "mnt-spool")
    assert [(r.failed, r.stage, r.artifact_id) for r in records] == [
        ("", "new", None),  # a new artifact next time: the refused one was never attached
        ("", "new", None),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pending", "retry", "{tmp}/nowhere"), "{tmp}/nowhere: no writable simvuefs mount "),
        (("pending", "drop", "--spool-dir", "{tmp}"), "{tmp} is not a simvuefs spool directory"),
    ],
)
def test_a_target_that_is_not_a_mount_or_spool(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    _, errors, report = command(*(arg.format(tmp=tmp_path) for arg in args))
    assert errors.startswith("simvuefs: " + message.format(tmp=tmp_path))
    assert report == "loaded: nothing exit: 1"

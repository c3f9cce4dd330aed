"""``simvuefs status`` and ``simvuefs unmount`` as real commands, without a mount: what
status says of a mount that is gone, and that neither command loads pyfuse3 or httpx."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from control_util import command, make_jwt, pending_upload, simvuefs_process, state_dirs

from simvuefs.config import MIB
from simvuefs.control import registry


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dirs(tmp_path, monkeypatch)


@pytest.fixture
def gone_mount(tmp_path: Path) -> Path:
    """A writable mount that is gone (its daemon exited) and left an upload pending."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    spool_dir = tmp_path / "spool"
    pending_upload(
        spool_dir,
        b"x" * (3 * MIB),
        run_id="run-7",
        name="sweep/result.bin",
        attempts=2,
        last_error="storage answered HTTP 500",
    )
    with simvuefs_process() as pid:
        pass  # a pid that was a mount daemon and is no more
    registry.save(
        registry.MountRecord(
            mountpoint=str(mountpoint), pid=pid, url="http://h/api", spool_dir=str(spool_dir)
        )
    )
    return mountpoint


def test_status_without_records(tmp_path: Path) -> None:
    assert "nothing pending" in command("status", tmp_path)[0]
    assert "does not exist" in command("status", "--spool-dir", tmp_path / "x")[0]


def test_status_of_a_gone_mount_lists_its_pending_uploads(gone_mount: Path) -> None:
    """SEMANTICS.md: run, name, size, failed attempts and the last error, whether the mount
    is running, dead or gone."""
    expected = (
        f"{gone_mount}: not mounted (pending uploads resume at its next mount), "
        "server http://h/api\n"
        f"spool {gone_mount.parent / 'spool'}: 1 pending upload(s)\n"
        "  run run-7: input/sweep/result.bin, 3145728 bytes (3.0 MiB), 2 failed attempt(s), "
        "stage new, since 2025-03-01 12:00:00 UTC\n"
        "    last error: storage answered HTTP 500\n"
    )
    out, errors, report = command("status", gone_mount)
    assert (out, errors) == (expected, "")
    assert report == "loaded: nothing exit: 0"
    out, _, report = command("status")
    assert out == expected
    assert report == "loaded: nothing exit: 0"


def test_status_of_a_daemon_that_is_not_mounted(gone_mount: Path) -> None:
    record = registry.load(gone_mount)
    assert record is not None
    with simvuefs_process() as pid:
        registry.save(dataclasses.replace(record, pid=pid))
        out, _, _ = command("status", gone_mount)
    assert out.startswith(f"{gone_mount}: daemon {pid} running, server http://h/api\n")


def test_status_mentions_files_that_can_never_be_uploaded(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    pending_upload(spool_dir, b"small")
    (spool_dir / "abandoned" / "0123").write_bytes(b"never closed")
    out, _, report = command("status", "--spool-dir", spool_dir)
    assert "1 pending upload(s)" in out
    assert "5 bytes, no attempt failed" in out
    kept = (
        "1 file(s) that can never be uploaded (never closed, their writer killed, or their "
        f"record lost) are kept in {spool_dir / 'abandoned'}"
    )
    assert kept in out
    assert report == "loaded: nothing exit: 0"


@pytest.mark.parametrize(
    ("target", "message"),
    [("/proc", "/proc is not a FUSE mount (type proc)"), ("{tmp}", "{tmp} is not mounted")],
)
def test_unmount_refuses_what_it_cannot_unmount(tmp_path: Path, target: str, message: str) -> None:
    out, errors, report = command("unmount", target.format(tmp=tmp_path))
    assert (out, errors) == ("", f"simvuefs: {message.format(tmp=tmp_path)}")
    assert report == "loaded: nothing exit: 1"


def test_the_report_sees_what_a_mount_loads(tmp_path: Path) -> None:
    """The check above can fail: a foreground mount loads pyfuse3 and httpx before it
    finds that its mount point is missing."""
    env = {**os.environ, "SIMVUE_URL": "http://127.0.0.1:9", "SIMVUE_TOKEN": make_jwt()}
    _, errors, report = command("mount", tmp_path / "missing", "--foreground", env=env)
    assert errors == f"simvuefs: mountpoint {tmp_path / 'missing'} does not exist"
    assert report == "loaded: pyfuse3,httpx exit: 1"

"""``mount.simvuefs``: mount(8) and fstab mount simvuefs, umount(8) unmounts it.

The real path is exercised: ``/sbin/mount.fuse.simvuefs`` is made a symlink to the
installed console script (as README says), then ``mount -t fuse.simvuefs`` and
``mount -T FSTAB`` run it through libmount. The symlink is removed (or a previous one
restored) afterwards, and every mount is unmounted and its daemon stopped.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from simvuefs.control.mounts import mount_table
from testbed import REPO
from testbed.mounts import daemon_pids, is_mounted, unmount
from testbed.processes import run_tool, wait_until

HELPER_LINK = Path("/sbin/mount.fuse.simvuefs")
HELPER = REPO / ".venv" / "bin" / "mount.simvuefs"


@pytest.fixture
def helper_installed() -> Iterator[None]:
    """``/sbin/mount.fuse.simvuefs`` -> the installed helper, for the length of a test."""
    assert HELPER.exists(), "run scripts/install: mount.simvuefs is not installed"
    previous = os.readlink(HELPER_LINK) if HELPER_LINK.is_symlink() else None
    assert previous is not None or not HELPER_LINK.exists(), f"{HELPER_LINK} is not a symlink"
    HELPER_LINK.unlink(missing_ok=True)
    HELPER_LINK.symlink_to(HELPER)
    try:
        yield
    finally:
        HELPER_LINK.unlink(missing_ok=True)
        if previous is not None:
            HELPER_LINK.symlink_to(previous)


@pytest.fixture
def mnt(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty mount point; state and spool go under *tmp_path*; cleaned up afterwards."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = (tmp_path / "mnt").resolve()
    path.mkdir()
    try:
        yield path
    finally:
        unmount(path)
        for pid in daemon_pids(path):
            os.kill(pid, 9)


def assert_umount_stops_the_daemon(path: Path) -> None:
    pids = daemon_pids(path)
    assert len(pids) == 1, pids
    run_tool([shutil.which("umount") or "umount", str(path)])
    assert not is_mounted(path)
    assert wait_until(lambda: not daemon_pids(path), 10.0), "the daemon outlived umount"


@pytest.mark.fuse
def test_mount_t_fuse_simvuefs(helper_installed, seeded_devserver, tmp_path, mnt):
    log_file = tmp_path / "mount.log"
    options = f"config={seeded_devserver.config_path},ro,_netdev,nofail,log_file={log_file}"
    result = run_tool(["mount", "-t", "fuse.simvuefs", "simvuefs", str(mnt), "-o", options])
    assert result.stderr == b""
    assert mount_table()[str(mnt)] == "fuse.simvuefs"
    assert "demo run" in os.listdir(mnt / "runs"), log_file.read_text()
    with pytest.raises(OSError, match="Read-only file system") as refused:
        (mnt / "runs" / "demo run" / "input" / "new.txt").write_text("x")
    assert refused.value.errno == errno.EROFS
    assert "mounted at" in log_file.read_text()
    assert_umount_stops_the_daemon(mnt)


@pytest.mark.fuse
def test_fstab_line(helper_installed, seeded_devserver, tmp_path, mnt):
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"simvuefs  {mnt}  fuse.simvuefs  noauto,nofail,_netdev,x-systemd.automount,"
        f"config={seeded_devserver.config_path},metadata_ttl=10,log_file={tmp_path / 'log'}  0 0\n"
    )
    run_tool(["mount", "-T", str(fstab), str(mnt)])
    assert mount_table()[str(mnt)] == "fuse.simvuefs"
    assert "demo run" in os.listdir(mnt / "runs")
    assert_umount_stops_the_daemon(mnt)


@pytest.mark.fuse
def test_unknown_option_fails_mount(helper_installed, seeded_devserver, mnt):
    config = f"config={seeded_devserver.config_path}"
    argv = ["mount", "-t", "fuse.simvuefs", "simvuefs", str(mnt), "-o", config + ",bogus"]
    result = run_tool(argv, check=False)
    assert result.returncode != 0
    assert result.stderr.decode().strip() == "mount.simvuefs: unknown mount option 'bogus'"
    assert not is_mounted(mnt)
    assert not daemon_pids(mnt)

"""The Python API, ``simvuefs.mounted``, against the seeded devserver through real mounts.

The API runs the real command line in a child process; these tests check what a caller
sees: the yielded path reads the server's content, the block's end (normal or by an
exception) leaves nothing mounted and no process running, failures are one-line
MountErrors, and the token is never on a command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import simvuefs
from simvuefs.devserver import seed
from testbed.devserver import DevServer
from testbed.mounts import daemon_pids, is_mounted, unmount
from testbed.processes import wait_until


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    """An empty directory to mount at; whatever a failing test left there is cleaned up."""
    path = (tmp_path / "mnt").resolve()
    path.mkdir()
    try:
        yield path
    finally:
        left = is_mounted(path) or daemon_pids(path)
        unmount(path)
        for pid in daemon_pids(path):
            os.kill(pid, 9)
        assert not left, f"the API left {path} mounted or its process running"


def _cmdlines(mountpoint: Path) -> list[bytes]:
    found = []
    for pid in daemon_pids(mountpoint):
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            found.append(cmdline.read())
    return found


def test_import_loads_no_fuse():
    code = "import sys, simvuefs; simvuefs.MountError; print('pyfuse3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stdout.strip() == b"False"


def test_mounted_reads_the_server_and_unmounts(
    seeded_devserver: DevServer, mountpoint: Path, tmp_path: Path
):
    log_file = tmp_path / "api.log"
    with simvuefs.mounted(
        mountpoint,
        url=seeded_devserver.url,
        token=seeded_devserver.token,
        read_only=True,
        metadata_ttl=5,
        log_file=log_file,
    ) as root:
        assert isinstance(root, Path)
        assert root == mountpoint
        assert is_mounted(mountpoint)
        demo = root / "runs" / "demo run"
        assert (demo / "input" / "notes.txt").read_bytes() == seed.ARTIFACTS["notes"].content
        assert (demo / "input" / "system" / "mesh.dat").read_bytes() == (
            seed.ARTIFACTS["mesh"].content
        )
        listed = sorted(p.name.partition("@")[0] for p in (root / "runs").iterdir())
        assert listed == sorted(run.name.replace("/", "\u2215") for run in seed.RUNS)
        commands = _cmdlines(mountpoint)
        assert len(commands) == 1
        assert seeded_devserver.token.encode() not in commands[0]
        assert b"--read-only" in commands[0]
        assert b"--metadata-ttl\x005" in commands[0]
    assert not is_mounted(mountpoint)
    assert daemon_pids(mountpoint) == []
    assert "mounted" in log_file.read_text()


def test_mounted_unmounts_when_the_block_raises(
    seeded_devserver: DevServer, mountpoint: Path, tmp_path: Path
):
    def read_then_fail() -> None:
        with simvuefs.mounted(
            mountpoint,
            config=seeded_devserver.config_path,
            read_only=True,
            log_file=tmp_path / "api.log",
        ) as root:
            scan_log = root / "runs" / "scan:2025-03" / "output" / "scan.log"
            assert scan_log.read_bytes() == seed.ARTIFACTS["scan_log"].content
            raise KeyError("from the block")

    with pytest.raises(KeyError, match="from the block"):
        read_then_fail()
    assert wait_until(lambda: not is_mounted(mountpoint), 1)
    assert daemon_pids(mountpoint) == []


def test_a_refused_token_is_a_one_line_mount_error(
    seeded_devserver: DevServer, mountpoint: Path, tmp_path: Path
):
    with (
        pytest.raises(simvuefs.MountError) as raised,
        simvuefs.mounted(
            mountpoint,
            url=seeded_devserver.url,
            token="not.a.token",
            read_only=True,
            log_file=tmp_path / "api.log",
        ),
    ):
        pytest.fail("the block ran without a mount")
    message = str(raised.value)
    assert "\n" not in message
    assert "token" in message.lower(), message
    assert not is_mounted(mountpoint)
    assert daemon_pids(mountpoint) == []


def test_an_unknown_option_is_a_mount_error(mountpoint: Path, tmp_path: Path):
    with (
        pytest.raises(simvuefs.MountError, match="no_such_thing|no-such-thing"),
        simvuefs.mounted(mountpoint, no_such_thing=True, log_file=tmp_path / "api.log"),
    ):
        pytest.fail("the block ran without a mount")
    assert not is_mounted(mountpoint)

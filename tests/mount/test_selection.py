"""``simvuefs mount --folder PATH`` and ``--run NAME_OR_ID``: mounts of part of a server.

Real mounts of the seeded devserver (runs in ``/demo``, ``/demo/cfd`` and ``/scans``); the
expected runs come from the seed's own description.
"""

from __future__ import annotations

import os
from pathlib import Path

from simvuefs.devserver import seed
from testbed.devserver import DevServer
from testbed.mounts import mount_command, mounted
from testbed.processes import run_tool


def _shown(path: Path) -> list[str]:
    """The run names under runs/, aliases cut back to the name."""
    return sorted(name.partition("@")[0] for name in os.listdir(path / "runs"))


def _seeded(folder_prefix: str) -> list[str]:
    return sorted(
        run.name.replace("/", "\u2215")
        for run in seed.RUNS
        if run.folder == folder_prefix or run.folder.startswith(folder_prefix + "/")
    )


def test_folder_shows_the_folder_and_its_subfolders(seeded_devserver: DevServer, tmp_path: Path):
    with mounted(seeded_devserver, tmp_path, "--read-only", "--folder", "/demo") as mount:
        assert _shown(mount.path) == _seeded("/demo")
        assert "cfd\u2215mesh-study" in _shown(mount.path)  # in /demo/cfd
        assert "scan:2025-03" not in _shown(mount.path)
        notes = mount.path / "runs" / "demo run" / "input" / "notes.txt"
        assert notes.read_bytes() == seed.ARTIFACTS["notes"].content
        scan_id = seeded_devserver.run_ids("scan:2025-03")[0]
        assert not (mount.path / "runs" / f"scan:2025-03@{scan_id}").exists()


def test_folder_scans(seeded_devserver: DevServer, tmp_path: Path):
    with mounted(seeded_devserver, tmp_path, "--read-only", "--folder", "/scans/") as mount:
        assert _shown(mount.path) == ["scan:2025-03", "sweep", "sweep"]


def test_run_by_name_and_by_id(seeded_devserver: DevServer, tmp_path: Path):
    scan_id = seeded_devserver.run_ids("scan:2025-03")[0]
    args = ("--read-only", "--run", "demo run", "--run", scan_id, "--run", "no such run")
    with mounted(seeded_devserver, tmp_path, *args) as mount:
        assert _shown(mount.path) == ["demo run", "scan:2025-03"]
        log = mount.path / "runs" / "scan:2025-03" / "output" / "scan.log"
        assert log.read_bytes() == seed.ARTIFACTS["scan_log"].content


def test_folder_and_run_together(seeded_devserver: DevServer, tmp_path: Path):
    args = ("--read-only", "--folder", "/scans", "--run", "sweep", "--run", "demo run")
    with mounted(seeded_devserver, tmp_path, *args) as mount:
        assert _shown(mount.path) == ["sweep", "sweep"]


def test_a_relative_folder_is_refused_in_one_line(seeded_devserver: DevServer, tmp_path: Path):
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    argv = mount_command(
        Path(seeded_devserver.config_path), mountpoint, tmp_path / "log", "--folder", "demo"
    )
    result = run_tool(argv, check=False)
    assert result.returncode != 0
    assert result.stderr.decode().strip() == (
        "simvuefs: --folder 'demo': Simvue folder paths start with '/'"
    )
    assert not os.path.ismount(mountpoint)

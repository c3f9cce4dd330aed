"""What ``simvuefs mount`` hands to the daemon, without mounting: the Settings and options
given to ``fuse.mount.run`` (the spool directory above all), and the daemon's command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from control_util import make_jwt, state_dirs

from simvuefs import cli
from simvuefs.config import MIB, mount_spool_dir
from simvuefs.control import mounts
from simvuefs.fuse import mount

URL = "http://server.example:8765"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a mount point ``mnt`` and a server in the environment."""
    state_dirs(tmp_path, monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SIMVUE_URL", URL)
    monkeypatch.setenv("SIMVUE_TOKEN", make_jwt())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "setup_logging", lambda level, log_file: None)
    (tmp_path / "mnt").mkdir()
    return tmp_path


def run_foreground(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, Any]:
    """Run ``simvuefs mount ... --foreground``; return the (settings, options) it mounts with."""
    given: list[tuple[Any, Any]] = []
    monkeypatch.setattr(mount, "run", lambda s, o, on_ready: given.append((s, o)))
    with pytest.raises(SystemExit) as done:
        cli.main(["mount", *args, "--foreground"])
    assert done.value.code == 0
    (result,) = given
    return result


def test_a_server_mount_gets_its_own_spool(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, options = run_foreground(monkeypatch, "mnt")
    assert settings.url == URL + "/api"
    assert settings.spool_dir == mount_spool_dir(settings.url, work / "mnt")
    assert settings.spool_dir.parent == work / "cache" / "simvuefs" / "spool"
    assert settings.spool_min_free == 64 * MIB
    assert options.mountpoint == work / "mnt"
    assert options.remove_empty_spool  # the default spool goes when nothing is left in it


def test_a_named_spool_is_used_and_kept(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, options = run_foreground(monkeypatch, "mnt", "--spool-dir", "spool")
    assert settings.spool_dir == work / "spool"
    assert not options.remove_empty_spool


def test_an_offline_mount_spools_beside_its_cache(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIMVUE_URL")
    monkeypatch.delenv("SIMVUE_TOKEN")
    settings, options = run_foreground(monkeypatch, "mnt", "--offline", "offline")
    assert settings.spool_dir == work / "offline" / "simvuefs" / "spool"
    assert options.offline
    assert options.remove_empty_spool


def test_the_daemon_gets_absolute_paths(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[list[str], Path]] = []
    monkeypatch.setattr(mounts, "start_mount", lambda argv, log: started.append((argv, log)))
    with pytest.raises(SystemExit) as done:
        cli.main(["mount", "mnt", "--spool-dir", "spool", "--read-only", "--run", "a"])
    assert done.value.code == 0
    ((argv, log_file),) = started
    assert log_file == work / "state" / "simvuefs" / "mount.log"
    assert argv[:5] == ["mount", str(work / "mnt"), "--foreground", "--log-file", str(log_file)]
    assert argv[argv.index("--spool-dir") + 1] == str(work / "spool")
    assert {"--read-only", "--run", "a"} <= set(argv)

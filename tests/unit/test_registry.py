"""Mount records (``control/registry.py``): where they live, round trips, bad files, and
removing a spool that holds nothing."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from control_util import pending_upload, simvuefs_process, state_dirs

from simvuefs.control import registry
from simvuefs.control.registry import MountRecord
from simvuefs.write.spool import Spool


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dirs(tmp_path, monkeypatch)


def record(mountpoint: str = "/mnt/a", pid: int = 1) -> MountRecord:
    return MountRecord(
        mountpoint=mountpoint, pid=pid, url="http://h/api", spool_dir=f"/spools{mountpoint}"
    )


def test_state_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry.records_dir() == tmp_path / "state" / "simvuefs" / "mounts"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.state_dir() == tmp_path / "home" / ".local" / "state" / "simvuefs"


def test_each_mount_point_has_its_own_record_file() -> None:
    first = registry.record_path(Path("/mnt/a"))
    assert first == registry.record_path(Path("/mnt/a"))
    assert first != registry.record_path(Path("/mnt/b"))
    assert first.parent == registry.records_dir()
    assert first.suffix == ".json"


def test_save_load_remove_round_trip() -> None:
    saved = record()
    registry.save(saved)
    assert registry.load(Path("/mnt/a")) == saved
    registry.save(record(pid=2))  # a later mount at the same place replaces it
    assert registry.load(Path("/mnt/a")) == record(pid=2)
    assert [p.name for p in registry.records_dir().iterdir()] == [
        registry.record_path(Path("/mnt/a")).name
    ]
    registry.remove(Path("/mnt/a"))
    assert registry.load(Path("/mnt/a")) is None
    registry.remove(Path("/mnt/a"))  # removing twice is fine


def test_load_all_is_sorted_and_skips_unreadable_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert registry.load_all() == []  # no directory yet
    for mountpoint in ("/mnt/c", "/mnt/a", "/mnt/b"):
        registry.save(record(mountpoint))
    registry.record_path(Path("/mnt/b")).write_text("{not json")
    registry.record_path(Path("/mnt/x")).write_text(json.dumps({"mountpoint": "/mnt/x"}))
    with caplog.at_level(logging.WARNING):
        found = registry.load_all()
    assert [r.mountpoint for r in found] == ["/mnt/a", "/mnt/c"]
    assert caplog.text.count("skipping unreadable mount record") == 2


def test_save_failure_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "file"))  # not a directory
    registry.save(record())
    assert "cannot record the mount" in caplog.text
    assert registry.load(Path("/mnt/a")) is None


def test_daemon_running_needs_a_live_simvuefs_process() -> None:
    with simvuefs_process() as pid:
        assert record(pid=pid).daemon_running()
    assert not record(pid=pid).daemon_running()  # gone
    assert not record(pid=os.getpid()).daemon_running()  # alive, but not simvuefs
    assert not registry.simvuefs_running(2**22 + 1)  # above pid_max


def test_remove_empty_spool(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    Spool.open(empty, min_free=0).close()
    assert registry.remove_empty_spool(empty)
    assert not empty.exists()
    assert not registry.remove_empty_spool(tmp_path / "never")


def test_a_spool_with_a_pending_upload_is_kept(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    pending_upload(spool_dir, b"data")
    assert not registry.remove_empty_spool(spool_dir)
    assert len(list((spool_dir / "pending").iterdir())) == 2  # record and content
    abandoned = tmp_path / "abandoned"
    Spool.open(abandoned, min_free=0).close()
    (abandoned / "abandoned" / "f").write_text("kept for the user")
    assert not registry.remove_empty_spool(abandoned)
    assert (abandoned / "abandoned" / "f").exists()

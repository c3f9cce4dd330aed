"""``control/mounts.py`` without FUSE: the mount table, mount-point checks, and starting a
mount process that fails (the successful start is in tests/mount/test_cli.py and
test_api.py, the timeout too)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from control_util import make_jwt, state_dirs

from simvuefs.control import mounts
from simvuefs.control.mounts import ExitedEarly, MountProcess, StartFailed, start_mount
from simvuefs.logs import UsageError


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dirs(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("/mnt/a\\040b", "/mnt/a b"),
        ("/tab\\011and\\012newline", "/tab\tand\nnewline"),
        ("/back\\134slash", "/back\\slash"),
        ("/not\\9an\\04escape", "/not\\9an\\04escape"),
    ],
)
def test_unescape_mountinfo_fields(field: str, path: str) -> None:
    assert mounts._unescape(field) == path


def test_mount_table_and_mount_ids() -> None:
    table = mounts.mount_table()
    assert table["/proc"] == "proc"
    proc_id = mounts.mount_id_of(os.stat("/proc").st_dev)
    assert isinstance(proc_id, int)
    assert proc_id != mounts.mount_id_of(os.stat("/").st_dev)
    assert mounts.mount_id_of(os.makedev(4095, 4095)) is None


def test_check_mountpoint(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    mounts.check_mountpoint(empty)
    (tmp_path / "file").write_text("")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    for path, message in [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "file", "is not a directory"),
        (full, "is not empty"),
        (Path("/proc"), "/proc is already mounted (run 'simvuefs unmount /proc' first)"),
    ]:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            mounts.check_mountpoint(path)


def server_env(**extra: str) -> dict[str, str]:
    """An environment naming a server that is never contacted (the mounts below stop first)."""
    return {**os.environ, "SIMVUE_URL": "http://127.0.0.1:9", "SIMVUE_TOKEN": make_jwt(), **extra}


def foreground(mountpoint: Path, *flags: str) -> list[str]:
    return ["mount", str(mountpoint), "--foreground", *flags]


def test_a_child_that_exits_without_a_word(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "child.log"
    log_file.parent.mkdir()
    log_file.write_text("an earlier mount's last line\n")
    with pytest.raises(ExitedEarly, match="exited before the mount was ready") as raised:
        start_mount(foreground(tmp_path, "--metadata-ttl", "soon"), log_file)
    assert str(log_file) in str(raised.value)
    assert raised.value.exitcode == 1
    # What simvuefs.mounted shows instead: the child's own last line, from this start only.
    assert "invalid time to live 'soon'" in raised.value.last_logged
    assert raised.value.last_logged == log_file.read_text().splitlines()[-1]


@pytest.mark.parametrize(
    ("flags", "exitcode", "message"),
    [
        ((), 1, "mountpoint {mnt} does not exist"),
        (("--cache-size", "lots"), 2, "--cache-size: invalid size 'lots'"),
    ],
)
def test_a_reported_failure_keeps_its_message_and_exit_status(
    tmp_path: Path, flags: tuple[str, ...], exitcode: int, message: str
) -> None:
    missing = tmp_path / "missing"
    log_file = tmp_path / "mount.log"
    with pytest.raises(StartFailed) as raised:
        start_mount(foreground(missing, *flags), log_file, env=server_env())
    assert not isinstance(raised.value, ExitedEarly)
    assert str(raised.value).startswith(message.format(mnt=missing))
    assert raised.value.exitcode == exitcode


def test_the_environment_is_inherited_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing"
    for name in ("SIMVUE_URL", "SIMVUE_TOKEN"):
        monkeypatch.setenv(name, server_env()[name])
    with pytest.raises(StartFailed, match="does not exist"):
        start_mount(foreground(missing), tmp_path / "mount.log")
    bare = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
    bare["HOME"] = str(tmp_path)
    with pytest.raises(StartFailed, match="no Simvue server URL"):
        start_mount(foreground(missing), tmp_path / "mount.log", env=bare)


def spawn(code: str) -> MountProcess:
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ)
    return MountProcess(pid)


def test_mount_process_wait_and_end() -> None:
    quick = spawn("raise SystemExit(3)")
    assert quick.end(30.0) is True
    assert quick.wait(0) == 3
    quick.send_signal(signal.SIGTERM)  # reaped: nothing is sent to a recycled pid
    stuck = spawn("import time; time.sleep(60)")
    assert stuck.wait(0.1) is None
    assert stuck.end(0.1) is False  # killed
    assert stuck.wait(0) == -signal.SIGKILL

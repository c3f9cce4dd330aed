"""The ``simvuefs mount`` / ``simvuefs unmount`` commands, run as real processes.

Every failure to start must be one line on stderr and a non-zero exit, with nothing left
mounted and no daemon left running. Successful mounts go through ``testbed/mounts.py``,
whose teardown unmounts and checks that nothing is left behind.
"""

from __future__ import annotations

import base64
import errno
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import settings_for

from testbed.mounts import daemon_pids, is_mounted, mount_command, mounted, unmount
from testbed.processes import run_tool, wait_until


def simvuefs(*args, env=None, cwd=None, timeout=60.0) -> subprocess.CompletedProcess[bytes]:
    return run_tool(
        [sys.executable, "-m", "simvuefs", *args], check=False, env=env, cwd=cwd, timeout=timeout
    )


def clean_env(**extra) -> dict[str, str]:
    """The environment without SIMVUE_* variables (config must come from files/options)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
    env.update(extra)
    return env


def one_line_error(result) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("simvuefs: "), lines
    assert result.stdout == b""
    return lines[0]


def assert_nothing_left(mountpoint: Path) -> None:
    assert not is_mounted(mountpoint)
    assert wait_until(lambda: not daemon_pids(mountpoint), 5.0), daemon_pids(mountpoint)


def write_config(path: Path, url: str, token: str) -> Path:
    path.write_text(f'[server]\nurl = "{url}"\ntoken = "{token}"\n')
    return path


def forged(token: str) -> str:
    """The same claims with a signature the server never made."""
    header, payload, _ = token.split(".")
    signature = base64.urlsafe_b64encode(b"\0" * 32).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mnt(tmp_path) -> Iterator[Path]:
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    unmount(path)
    for pid in daemon_pids(path):
        os.kill(pid, signal.SIGKILL)


# -- refusing to start ----------------------------------------------------------------------


@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_unreachable_server(seeded_devserver, tmp_path, mnt, foreground):
    config = write_config(
        tmp_path / "s.toml", f"http://127.0.0.1:{free_port()}", seeded_devserver.token
    )
    flags = ["--foreground"] if foreground else []
    line = one_line_error(simvuefs("mount", str(mnt), "--config", str(config), *flags))
    assert "cannot reach the Simvue server" in line
    assert_nothing_left(mnt)


def test_rejected_token(seeded_devserver, tmp_path, mnt):
    config = write_config(tmp_path / "s.toml", seeded_devserver.url, forged(seeded_devserver.token))
    line = one_line_error(simvuefs("mount", str(mnt), "--config", str(config)))
    assert "rejected the token" in line
    assert seeded_devserver.token.split(".")[2] not in line
    assert_nothing_left(mnt)


def test_not_a_simvue_server(seeded_devserver, tmp_path, mnt):
    config = write_config(
        tmp_path / "s.toml", seeded_devserver.url + "/storage", seeded_devserver.token
    )
    line = one_line_error(simvuefs("mount", str(mnt), "--config", str(config)))
    assert "does not look like a Simvue server" in line
    assert_nothing_left(mnt)


def test_missing_config(tmp_path, mnt):
    line = one_line_error(simvuefs("mount", str(mnt), "--config", str(tmp_path / "nope.toml")))
    assert "nope.toml does not exist" in line
    home = tmp_path / "home"
    home.mkdir()
    result = simvuefs("mount", str(mnt), env=clean_env(HOME=str(home)), cwd=home)
    assert "no Simvue server URL" in one_line_error(result)
    assert_nothing_left(mnt)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "is not a directory"),
        (
            lambda tmp: (tmp / "full").mkdir() or (tmp / "full" / "x").touch() or tmp / "full",
            "is not empty",
        ),
    ],
    ids=["missing", "file", "not-empty"],
)
def test_bad_mountpoint(seeded_devserver, tmp_path, make, message):
    target = make(tmp_path)
    config = str(seeded_devserver.config_path)
    line = one_line_error(simvuefs("mount", str(target), "--config", config))
    assert message in line
    assert str(target) in line
    assert_nothing_left(target)


def test_bad_option_values(tmp_path, mnt):
    result = simvuefs("mount", str(mnt), "--metadata-ttl", "soon")
    assert result.returncode == 2
    assert b"invalid time to live 'soon'" in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cache-size", "lots"], "--cache-size: invalid size 'lots'"),
        (["--read-ahead", "100"], "--read-ahead 100 bytes is less than "),
        (["--read-ahead-total=-1M"], "--read-ahead-total: invalid size '-1M'"),
        (
            ["--read-ahead", "64MiB", "--read-ahead-total", "32MiB"],
            "--read-ahead 64 MiB is more than --read-ahead-total 32 MiB",
        ),
        (
            ["--read-ahead", "8MiB", "--read-part-size", "16MiB"],
            "--read-part-size 16 MiB is more than --read-ahead 8 MiB",
        ),
    ],
)
@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_bad_memory_caps(seeded_devserver, mnt, flags, message, foreground):
    config = ["--config", str(seeded_devserver.config_path)]
    result = simvuefs("mount", str(mnt), *config, *flags, *(["-f"] if foreground else []))
    assert message in one_line_error(result)
    assert result.returncode == 2
    assert_nothing_left(mnt)


# -- mounting ---------------------------------------------------------------------------------


def mount_options(path: Path) -> tuple[str, set[str], set[str]]:
    """Return (filesystem type, mount options, super options) of *path* from mountinfo."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            sep = fields.index("-")
            return fields[sep + 1], set(fields[5].split(",")), set(fields[sep + 3].split(","))
    raise AssertionError(f"{path} is not in mountinfo")


def test_daemon_returns_when_ready_and_serves(seeded_devserver, tmp_path):
    with mounted(seeded_devserver, tmp_path, "--log-level", "DEBUG") as mount:
        # No waiting: the command returned, so the mount answers.
        runs = sorted(os.listdir(mount.path / "runs"))
        assert "demo run" in runs
        notes = mount.path / "runs" / "demo run" / "input" / "notes.txt"
        assert notes.read_bytes() == b"Demo run notes.\nSecond line.\n"
        fstype, options, super_options = mount_options(mount.path)
        assert fstype == "fuse.simvuefs"
        assert "rw" in options  # writable by default: input/ accepts new files
        assert {"nosuid", "nodev"} <= options
        assert "allow_other" not in super_options
        assert "default_permissions" in super_options
        device = os.stat(mount.path).st_dev
        read_ahead = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
        assert read_ahead.read_text().strip() == "1024"
    log = mount.log_file.read_text()
    assert "mounted at" in log
    assert seeded_devserver.token not in log
    assert seeded_devserver.token.split(".")[2] not in log


def test_allow_other_and_read_only_are_passed_on(seeded_devserver, tmp_path):
    with mounted(seeded_devserver, tmp_path, "--allow-other", "--read-only") as mount:
        assert "allow_other" in mount_options(mount.path)[2]
        assert "ro" in mount_options(mount.path)[1]


def test_default_log_file_ignores_a_relative_xdg_state_home(monkeypatch, tmp_path):
    from simvuefs.cli import default_log_file
    from simvuefs.control.registry import state_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # not absolute: ignored (XDG spec)
    assert default_log_file() == tmp_path / ".local" / "state" / "simvuefs" / "mount.log"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_log_file() == tmp_path / "state" / "simvuefs" / "mount.log"
    assert default_log_file().parent == state_dir()


def test_default_log_file_is_in_the_state_directory(seeded_devserver, tmp_path, mnt):
    state = tmp_path / "state"
    argv = [
        sys.executable,
        "-m",
        "simvuefs",
        "mount",
        str(mnt),
        "--config",
        str(seeded_devserver.config_path),
    ]
    result = run_tool(argv, env=clean_env(XDG_STATE_HOME=str(state)), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert is_mounted(mnt)
    log = state / "simvuefs" / "mount.log"
    assert "mounted at" in log.read_text()
    help_text = simvuefs("mount", "--help").stdout.decode()
    assert "XDG_STATE_HOME" in help_text
    assert "simvuefs/mount.log" in help_text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(seeded_devserver, tmp_path, signum):
    with mounted(seeded_devserver, tmp_path, foreground=True) as mount:
        assert os.listdir(mount.path / "runs")
        mount.process.send_signal(signum)
        assert mount.process.wait(10) == 0
        assert not is_mounted(mount.path)
    assert f"{signal.Signals(signum).name} received" in mount.log_file.read_text()


def test_daemon_unmounts_on_sigterm(seeded_devserver, tmp_path):
    with mounted(seeded_devserver, tmp_path) as mount:
        os.kill(mount.pid, signal.SIGTERM)
        assert wait_until(lambda: not is_mounted(mount.path), 10)
        assert wait_until(lambda: not daemon_pids(mount.path), 10)


def test_already_mounted(seeded_devserver, tmp_path):
    with mounted(seeded_devserver, tmp_path) as mount:
        config = str(seeded_devserver.config_path)
        line = one_line_error(simvuefs("mount", str(mount.path), "--config", config))
        assert "is already mounted" in line
        assert len(daemon_pids(mount.path)) == 1


# -- unmounting ----------------------------------------------------------------------------


def test_unmount_command(seeded_devserver, tmp_path):
    with mounted(seeded_devserver, tmp_path) as mount:
        result = simvuefs("unmount", str(mount.path))
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""
        assert not is_mounted(mount.path)
        assert wait_until(lambda: not daemon_pids(mount.path), 10)
    line = one_line_error(simvuefs("unmount", str(mount.path)))
    assert "is not mounted" in line


def test_unmount_busy_mount_detaches_lazily(seeded_devserver, tmp_path):
    with mounted(seeded_devserver, tmp_path) as mount:
        inside = mount.path / "runs" / "demo run"
        sleeper = subprocess.Popen(["sleep", "30"], cwd=inside)
        try:
            result = simvuefs("unmount", str(mount.path))
            assert result.returncode == 0, result.stderr
            message = result.stderr.decode()
            assert "busy" in message
            assert "lazily" in message
            assert not is_mounted(mount.path)
        finally:
            sleeper.kill()
            sleeper.wait()
        assert wait_until(lambda: not daemon_pids(mount.path), 10)


def test_dead_mount_is_reported_and_cleared(seeded_devserver, tmp_path, mnt):
    log_file = tmp_path / "mount.log"
    argv = mount_command(seeded_devserver.config_path, mnt, log_file)
    run_tool(argv)
    [pid] = daemon_pids(mnt)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not daemon_pids(mnt), 5)
    with pytest.raises(OSError) as excinfo:  # noqa: PT011 (the errno is checked below)
        os.listdir(mnt)
    assert excinfo.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    line = one_line_error(
        simvuefs("mount", str(mnt), "--config", str(seeded_devserver.config_path))
    )
    assert "dead mount" in line
    result = simvuefs("unmount", str(mnt))
    assert result.returncode == 0, result.stderr
    assert not is_mounted(mnt)
    assert os.listdir(mnt) == []


def test_kernel_refusing_the_mount_is_a_plain_usage_error(seeded_devserver, mnt, monkeypatch):
    """In-process: what pyfuse3.init raises must reach the CLI as one UsageError, not as an
    exception group from the nurseries it passes through."""
    import pyfuse3

    from simvuefs.fuse import mount
    from simvuefs.logs import UsageError

    def refuse(ops, mountpoint, options):
        raise RuntimeError("fuse_session_mount failed")

    monkeypatch.setattr(pyfuse3, "init", refuse)
    monkeypatch.setenv("XDG_STATE_HOME", str(mnt.parent / "state"))
    spool = mnt.parent / "spool"
    settings = settings_for(seeded_devserver, spool_dir=spool)
    options = mount.MountOptions(mountpoint=mnt, remove_empty_spool=True)
    ready = []
    with pytest.raises(UsageError, match=r"cannot mount .*: fuse_session_mount failed"):
        mount.run(settings, options, lambda: ready.append(1))
    assert ready == []
    assert not is_mounted(mnt)
    # Nothing was written: no mount record and no spool are left behind.
    assert list((mnt.parent / "state").glob("simvuefs/mounts/*.json")) == []
    assert not spool.exists()


def test_daemon_parent_gives_up_on_a_child_that_never_gets_ready(seeded_devserver, mnt):
    from simvuefs.control import mounts
    from simvuefs.logs import UsageError

    log_file = mnt.parent / "slow.log"
    argv = [
        "mount",
        str(mnt),
        "--foreground",
        "--config",
        str(seeded_devserver.config_path),
        "--log-file",
        str(log_file),
    ]
    seeded_devserver.set_faults(stall_seconds=20, stall_where="api")
    try:
        # 5 s: long enough for the child to start and install its handlers on a loaded
        # machine (with 2 s, a busy CI machine could SIGTERM it before it logged anything).
        with pytest.raises(UsageError, match=r"not ready after 5 s"):
            mounts.start_mount(argv, log_file, timeout=5.0)
    finally:
        seeded_devserver.clear_faults()
    assert_nothing_left(mnt)
    # The child gave up promptly on SIGTERM instead of waiting for the stalled server.
    assert "simvuefs: SIGTERM received before the mount was ready" in log_file.read_text()

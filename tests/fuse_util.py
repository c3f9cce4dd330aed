"""Real FUSE mounts for the tests: start the ``simvuefs mount`` CLI, wait, always clean up.

The pattern is pyfuse3's ``test/util.py``: the filesystem runs as the real command a user
types (``python -m simvuefs mount MNT --config FILE``), the test waits until the kernel lists
the mount in ``/proc/mounts``, and teardown - whatever happened in the test - unmounts with
``fusermount3 -u`` (``-uz``, lazy, when the mount is busy), makes sure the daemon process has
exited (killing it by pid if not), and asserts that nothing is left mounted.

Invariant: every mount started through :func:`mounted` is gone from ``/proc/mounts`` and has
no daemon process left when :func:`mounted` exits, or the test fails saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Generous for a loaded 2-core CI box, yet bounded so a broken mount fails instead of hanging.
MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 10.0
DAEMON_EXIT_TIMEOUT = 10.0
DEFAULT_TOOL_TIMEOUT = 60.0
# How much of the daemon's log a failure message quotes.
LOG_TAIL_CHARS = 6000


def fusermount() -> str:
    """Return the fusermount binary (fuse3 systems may only ship ``fusermount3``)."""
    for name in ("fusermount3", "fusermount"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("neither fusermount3 nor fusermount is installed (package fuse3)")


def run_tool(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
    check: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run *args* with a timeout and captured output; with *check*, fail on a non-zero exit.

    A timeout fails the test (after killing the tool) instead of hanging it: mounts can stall.
    """
    argv = [os.fspath(a) for a in args]
    try:
        result = subprocess.run(
            argv, capture_output=True, timeout=timeout, cwd=cwd, env=env, input=stdin
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{argv} did not finish within {timeout} s") from exc
    if check and result.returncode != 0:
        raise AssertionError(
            f"{argv} exited with {result.returncode}\n"
            f"stdout: {result.stdout[-2000:]!r}\nstderr: {result.stderr[-2000:]!r}"
        )
    return result


_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def mount_points() -> list[str]:
    """Return every mount point listed in ``/proc/mounts`` (octal escapes such as ``\\040``
    for a space decoded)."""
    with open("/proc/mounts", "rb") as table:
        fields = [line.split()[1] for line in table if line.strip()]
    return [os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), f)) for f in fields]


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Return True when *path* is currently a mount point.

    Reads only the mount table (never stats *path*, which could hang on a stuck mount), so
    *path* must be absolute and free of symlinks, as :func:`mounted` makes it.
    """
    return os.path.abspath(path) in mount_points()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll *predicate* until it is true (return True) or *timeout* seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _alive(pid: int) -> bool:
    """Return True if *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def daemon_pids(mountpoint: str | os.PathLike[str]) -> list[int]:
    """Return the pids of ``simvuefs mount`` processes serving *mountpoint*.

    Found by their command line (``... simvuefs mount <mountpoint> ...``), which is unique
    per test because every mount point is a fresh temporary directory.
    """
    target = os.path.abspath(mountpoint)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = [os.fsdecode(a) for a in cmdline.read().split(b"\0") if a]
        except OSError:
            continue
        serves_target = "mount" in argv and target in (os.path.abspath(a) for a in argv)
        if serves_target and any("simvuefs" in a for a in argv) and _alive(int(entry)):
            found.append(int(entry))
    return found


def unmount(mountpoint: str | os.PathLike[str]) -> None:
    """Unmount *mountpoint*: ``fusermount -u``, then lazily (``-uz``) if it is still busy."""
    path = os.path.abspath(mountpoint)
    if not is_mounted(path):
        return
    result = run_tool([fusermount(), "-u", path], check=False, timeout=UNMOUNT_TIMEOUT)
    if result.returncode != 0 and is_mounted(path):
        run_tool([fusermount(), "-uz", path], check=False, timeout=UNMOUNT_TIMEOUT)
    wait_until(lambda: not is_mounted(path), UNMOUNT_TIMEOUT)


def _stop_process(pid: int) -> bool:
    """Wait for daemon *pid* to exit on its own (return True), else SIGTERM/SIGKILL it (False)."""
    if wait_until(lambda: not _alive(pid), DAEMON_EXIT_TIMEOUT):
        return True
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if wait_until(lambda: not _alive(pid), 5.0):
            break
    return False


@dataclass
class Mount:
    """A live simvuefs mount made by :func:`mounted`."""

    path: Path
    """The mount point; ``path / "runs"`` holds the runs."""
    log_file: Path
    """The daemon's log (``--log-file``)."""
    pid: int
    """The daemon's process id."""
    process: subprocess.Popen[bytes] | None
    """The foreground process, or None for a daemonised mount."""

    def log_tail(self) -> str:
        """Return the end of the daemon's log, for failure messages."""
        return _tail(self.log_file)


def mount_command(
    config_file: Path | None, mountpoint: Path, log_file: Path, *extra: str
) -> list[str]:
    """Return the argv of the real CLI mounting the server of *config_file* at *mountpoint*
    (no ``--config`` for None: e.g. an ``--offline`` mount in *extra*)."""
    config = [] if config_file is None else ["--config", str(config_file)]
    argv = [sys.executable, "-m", "simvuefs", "mount", str(mountpoint), *config]
    return [*argv, "--log-file", str(log_file), *extra]


def config_file_of(server: Any) -> Path | None:
    """Return the ``simvue.toml`` that the devserver fixture *server* wrote for clients
    (None for no server)."""
    return None if server is None else Path(server.config_path)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except FileNotFoundError:
        return "(none)"


def _abandon(mountpoint: Path) -> None:
    """Clean up after a mount that did not come up: unmount it, stop its daemon."""
    unmount(mountpoint)
    for pid in daemon_pids(mountpoint):
        _stop_process(pid)


def _start_daemon(argv: list[str], mountpoint: Path, log_file: Path) -> int:
    """Run the daemonising CLI (it returns once the mount is ready) and return the daemon pid."""
    try:
        result = subprocess.run(argv, capture_output=True, timeout=MOUNT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        _abandon(mountpoint)
        raise AssertionError(
            f"simvuefs mount did not return within {MOUNT_TIMEOUT} s\n"
            f"daemon log:\n{_tail(log_file)}"
        ) from None
    if result.returncode != 0 or not is_mounted(mountpoint):
        mounted_now = is_mounted(mountpoint)
        _abandon(mountpoint)
        raise AssertionError(
            f"simvuefs mount exited with {result.returncode}, mounted={mounted_now}\n"
            f"stderr: {result.stderr.decode(errors='replace')}\ndaemon log:\n{_tail(log_file)}"
        )
    pids = daemon_pids(mountpoint)
    assert len(pids) == 1, f"expected one daemon serving {mountpoint}, found {pids}"
    return pids[0]


def _start_foreground(
    argv: list[str], mountpoint: Path, log_file: Path, output_file: Path
) -> subprocess.Popen[bytes]:
    """Popen the CLI with ``--foreground`` and wait until the mount appears.

    Its stdout/stderr go to *output_file* (a pipe nobody reads could fill up and block it).
    """
    with output_file.open("wb") as output:
        process = subprocess.Popen([*argv, "--foreground"], stdout=output, stderr=output)
    ready = wait_until(lambda: is_mounted(mountpoint) or process.poll() is not None, MOUNT_TIMEOUT)
    if ready and is_mounted(mountpoint):
        return process
    unmount(mountpoint)
    process.kill()
    process.wait(10)
    raise AssertionError(
        f"foreground mount did not come up (exit status {process.returncode}, waited at most "
        f"{MOUNT_TIMEOUT} s)\noutput: {_tail(output_file)}\n"
        f"daemon log:\n{_tail(log_file)}"
    )


@contextmanager
def mounted(
    server: Any, tmp_path: Path, *extra_args: str, foreground: bool = False
) -> Iterator[Mount]:
    """Mount the devserver fixture *server* under *tmp_path* with the real CLI; yield a Mount.

    *extra_args* go to ``simvuefs mount`` (with *server* None, they say what to mount,
    e.g. ``"--offline", CACHE_DIR``). With *foreground*, the CLI runs with
    ``--foreground`` as a child process; otherwise it daemonises and returns when ready.
    Teardown always unmounts, stops the daemon and checks that nothing is left behind.
    """
    mountpoint = (tmp_path / "mnt").resolve()
    mountpoint.mkdir()
    log_file = tmp_path / "simvuefs-mount.log"
    argv = mount_command(config_file_of(server), mountpoint, log_file, *extra_args)
    process: subprocess.Popen[bytes] | None = None
    if foreground:
        process = _start_foreground(argv, mountpoint, log_file, tmp_path / "foreground.out")
        pid = process.pid
    else:
        pid = _start_daemon(argv, mountpoint, log_file)
    mount = Mount(path=mountpoint, log_file=log_file, pid=pid, process=process)
    try:
        yield mount
    finally:
        _tear_down(mount)


def _tear_down(mount: Mount) -> None:
    """Unmount, make sure the daemon is gone, then assert nothing is left behind."""
    unmount(mount.path)
    problems = []
    if mount.process is not None:
        try:
            status = mount.process.wait(DAEMON_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            mount.process.kill()
            status = mount.process.wait(5)
            problems.append("the foreground process did not exit after the unmount")
        else:
            if status != 0:
                problems.append(f"the foreground process exited with status {status}")
    elif not _stop_process(mount.pid):
        problems.append(f"daemon {mount.pid} did not exit after the unmount and was killed")
    for pid in daemon_pids(mount.path):
        _stop_process(pid)
        problems.append(f"a second daemon {pid} was serving {mount.path}")
    if is_mounted(mount.path):
        problems.append(f"{mount.path} is still mounted after teardown")
    assert not problems, "; ".join(problems) + "\ndaemon log:\n" + mount.log_tail()

"""FUSE mounts for tests, benchmarks and scripts: start, wait, always clean up.

The pattern is pyfuse3's ``test/util.py``: the filesystem runs as the real command a user
types (``python -m simvuefs mount MNT --config FILE``), the caller waits until the kernel
lists the mount in ``/proc/mounts``, and teardown - whatever happened meanwhile - unmounts
with ``fusermount3 -u`` (``-uz``, lazy, when the mount is busy), makes sure the process
serving it has exited (killing it by pid if not), and says what was left behind.

- :func:`mounted`: a simvuefs mount of a :class:`~testbed.devserver.DevServer`, torn down
  strictly (an AssertionError when anything was left behind). Tests, ``scripts/stress`` and
  ``scripts/bench-listings`` use it.
- :func:`start_foreground` and :func:`tear_down`: any FUSE program (simvuefs, rclone,
  httpdirfs) in the foreground; the benchmark uses them and decides itself what a problem
  at teardown means.

Invariants: every mount started here is gone from ``/proc/mounts`` and has no process left
serving it after :func:`tear_down` (or :func:`mounted`'s exit); the mount table is only
read, never a ``stat`` of a mount point (which could hang on a stuck mount).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed.devserver import DevServer
from testbed.processes import alive, run_tool, stop_pid, wait_until

# Generous for a loaded 2-core CI box, yet bounded so a broken mount fails instead of hanging.
MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 10.0
DAEMON_EXIT_TIMEOUT = 10.0
# How much of the daemon's log a failure message quotes.
LOG_TAIL_CHARS = 6000

_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


class MountFailed(AssertionError):
    """A mount did not come up (what was started is cleaned up already)."""


def fusermount() -> str:
    """Return the fusermount binary (fuse3 systems may only ship ``fusermount3``).

    Looked up here rather than in simvuefs, so that teardown works when simvuefs is broken.
    """
    for name in ("fusermount3", "fusermount"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("neither fusermount3 nor fusermount is installed (package fuse3)")


def parse_mount_table(table: bytes) -> list[str]:
    """Return the mount points of *table*, the text of ``/proc/mounts`` (octal escapes such
    as ``\\040`` for a space decoded)."""
    fields = [line.split()[1] for line in table.splitlines() if line.strip()]
    return [os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), f)) for f in fields]


def mount_points() -> list[str]:
    """Return every mount point listed in ``/proc/mounts``."""
    with open("/proc/mounts", "rb") as table:
        return parse_mount_table(table.read())


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Return True when *path* is currently a mount point.

    Reads only the mount table, so *path* must be absolute and free of symlinks, as
    :func:`mounted` makes it.
    """
    return os.path.abspath(path) in mount_points()


def mounts_below(directory: Path) -> list[Path]:
    """Return the mount points at or below *directory*, in mount-table order."""
    prefix = str(directory)
    return [
        Path(point) for point in mount_points() if point == prefix or point.startswith(prefix + "/")
    ]


def daemon_pids(mountpoint: str | os.PathLike[str]) -> list[int]:
    """Return the pids of ``simvuefs mount`` processes serving *mountpoint*.

    Found by their command line (``... simvuefs mount <mountpoint> ...``), which is unique
    as long as every mount point is a fresh temporary directory.
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
        if serves_target and any("simvuefs" in a for a in argv) and alive(int(entry)):
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


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except FileNotFoundError:
        return "(none)"


@dataclass
class Mount:
    """A live mount made by :func:`mounted` or :func:`start_foreground`."""

    path: Path
    """The mount point; for simvuefs, ``path / "runs"`` holds the runs."""
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


def config_file_of(server: DevServer | None) -> Path | None:
    """Return the ``simvue.toml`` that *server* wrote for clients (None for no server)."""
    return None if server is None else server.config_path


def _abandon(mountpoint: Path) -> None:
    """Clean up after a mount that did not come up: unmount it, stop its daemon."""
    unmount(mountpoint)
    for pid in daemon_pids(mountpoint):
        stop_pid(pid, DAEMON_EXIT_TIMEOUT)


def start_daemon(
    argv: list[str], mountpoint: Path, log_file: Path, env: dict[str, str] | None = None
) -> int:
    """Run the daemonising CLI *argv* (it returns once the mount is ready); return the
    daemon's pid. Raises MountFailed, after cleaning up, if the mount does not come up."""
    try:
        result = subprocess.run(
            argv, capture_output=True, timeout=MOUNT_TIMEOUT, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        _abandon(mountpoint)
        raise MountFailed(
            f"simvuefs mount did not return within {MOUNT_TIMEOUT} s\n"
            f"daemon log:\n{_tail(log_file)}"
        ) from None
    if result.returncode != 0 or not is_mounted(mountpoint):
        mounted_now = is_mounted(mountpoint)
        _abandon(mountpoint)
        raise MountFailed(
            f"simvuefs mount exited with {result.returncode}, mounted={mounted_now}\n"
            f"stderr: {result.stderr.decode(errors='replace')}\ndaemon log:\n{_tail(log_file)}"
        )
    pids = daemon_pids(mountpoint)
    if len(pids) != 1:
        _abandon(mountpoint)
        raise MountFailed(f"expected one daemon serving {mountpoint}, found {pids}")
    return pids[0]


def start_foreground(
    argv: list[str],
    mountpoint: Path,
    log_file: Path,
    output_file: Path,
    env: dict[str, str] | None = None,
) -> Mount:
    """Start the FUSE program *argv*, which serves *mountpoint* in the foreground, and wait
    until the mount appears. Raises MountFailed, after cleaning up, if it does not.

    Its stdout/stderr are appended to *output_file* (a pipe nobody reads could fill up and
    block it); *output_file* may be *log_file*.
    """
    with output_file.open("ab") as output:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=env
        )
    ready = wait_until(lambda: is_mounted(mountpoint) or process.poll() is not None, MOUNT_TIMEOUT)
    if ready and is_mounted(mountpoint):
        return Mount(path=mountpoint, log_file=log_file, pid=process.pid, process=process)
    unmount(mountpoint)
    process.kill()
    process.wait(10)
    raise MountFailed(
        f"foreground mount did not come up (exit status {process.returncode}, waited at most "
        f"{MOUNT_TIMEOUT} s)\noutput: {_tail(output_file)}\n"
        f"daemon log:\n{_tail(log_file)}"
    )


def tear_down(mount: Mount, exit_timeout: float = DAEMON_EXIT_TIMEOUT) -> list[str]:
    """Unmount *mount* and make sure its process is gone (it gets *exit_timeout* s to exit
    on its own); return what was wrong (empty when the teardown was clean)."""
    unmount(mount.path)
    problems = []
    if mount.process is not None:
        try:
            status = mount.process.wait(exit_timeout)
        except subprocess.TimeoutExpired:
            mount.process.kill()
            status = mount.process.wait(5)
            problems.append("the foreground process did not exit after the unmount")
        else:
            if status != 0:
                problems.append(f"the foreground process exited with status {status}")
    elif not stop_pid(mount.pid, exit_timeout):
        problems.append(f"daemon {mount.pid} did not exit after the unmount and was killed")
    for pid in daemon_pids(mount.path):
        stop_pid(pid, DAEMON_EXIT_TIMEOUT)
        problems.append(f"a second daemon {pid} was serving {mount.path}")
    if is_mounted(mount.path):
        problems.append(f"{mount.path} is still mounted after teardown")
    return problems


@contextmanager
def mounted(
    server: DevServer | None,
    workdir: Path,
    *extra_args: str,
    foreground: bool = False,
    env: dict[str, str] | None = None,
    exit_timeout: float = DAEMON_EXIT_TIMEOUT,
) -> Iterator[Mount]:
    """Mount *server* at ``workdir/mnt`` with the real CLI; yield a Mount.

    *extra_args* go to ``simvuefs mount`` (with *server* None, they say what to mount,
    e.g. ``"--offline", CACHE_DIR``). With *foreground*, the CLI runs with
    ``--foreground`` as a child process; otherwise it daemonises and returns when ready.
    *env* is the CLI's environment (default: this process's). Teardown always unmounts and
    stops the daemon (which gets *exit_timeout* s to exit on its own), then raises
    AssertionError if anything was left behind.
    """
    mountpoint = (workdir / "mnt").resolve()
    mountpoint.mkdir()
    log_file = workdir / "simvuefs-mount.log"
    argv = mount_command(config_file_of(server), mountpoint, log_file, *extra_args)
    if foreground:
        output_file = workdir / "foreground.out"
        mount = start_foreground([*argv, "--foreground"], mountpoint, log_file, output_file, env)
    else:
        pid = start_daemon(argv, mountpoint, log_file, env)
        mount = Mount(path=mountpoint, log_file=log_file, pid=pid, process=None)
    try:
        yield mount
    finally:
        problems = tear_down(mount, exit_timeout)
        if problems:
            raise AssertionError("; ".join(problems) + "\ndaemon log:\n" + mount.log_tail())

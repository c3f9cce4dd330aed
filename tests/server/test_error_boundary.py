"""The FUSE error boundary: exceptions nobody planned for, raised below the fs layer, become
EIO for the one request, and the same Operations object keeps working.

Handlers are awaited directly (no kernel) over a real devserver (``tests/ops_util.py``); a
crash through a real mount is what ``tests/mount/test_hostile.py`` looks for in the log.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pyfuse3
import pytest
import trio
from helpers import raw_artifact, raw_run
from ops_util import CTX, open_ops

from simvuefs.fuse.inodes import ROOT_INODE, InodeTable
from simvuefs.fuse.tree import Tree
from simvuefs.read.reader import Reader
from testbed.devserver import DevServer

UNPLANNED = [
    RuntimeError("bug"),
    KeyError("missing"),
    TypeError("wrong type"),
    AttributeError("no such attribute"),
    ZeroDivisionError("division by zero"),
    RecursionError("too deep"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    trio.TooSlowError(),
    ValueError("bad value"),
]


@pytest.mark.parametrize("error", UNPLANNED, ids=lambda e: type(e).__name__)
async def test_unplanned_exceptions_become_eio(
    devserver: DevServer, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    run_id = raw_run(devserver, "bugs")
    raw_artifact(devserver, run_id, {"name": "f.txt"}, "hello\n")
    async with open_ops(devserver) as ops:
        runs = await ops.lookup(ROOT_INODE, b"runs", CTX)
        run = await ops.lookup(runs.st_ino, b"bugs", CTX)
        category = await ops.lookup(run.st_ino, b"output", CTX)
        file = await ops.lookup(category.st_ino, b"f.txt", CTX)
        info = await ops.open(file.st_ino, os.O_RDONLY, CTX)

        async def fail(*args: object, **kwargs: object) -> Any:
            raise error

        for owner, method in (
            (Tree, "lookup"),
            (Tree, "children"),
            (Tree, "refresh"),
            (Tree, "exact_size"),
            (Reader, "read"),
            (Reader, "release"),
        ):
            monkeypatch.setattr(owner, method, fail)
        calls = {
            "lookup": ops.lookup(runs.st_ino, b"bugs", CTX),
            "opendir": ops.opendir(category.st_ino, CTX),
            "getxattr": ops.getxattr(run.st_ino, b"user.simvue.status", CTX),
            "listxattr": ops.listxattr(run.st_ino, CTX),
            "open": ops.open(file.st_ino, os.O_RDONLY, CTX),
            "read": ops.read(info.fh, 0, 4096),
            "release": ops.release(info.fh),
        }
        for name, call in calls.items():
            with pytest.raises(pyfuse3.FUSEError) as caught:
                await call
            assert caught.value.errno == errno.EIO, name
        # forget must never raise, whatever breaks under it.
        monkeypatch.setattr(InodeTable, "forget", lambda *args: (_ for _ in ()).throw(error))
        await ops.forget([(file.st_ino, 1)])
        monkeypatch.undo()
        # The same operations object keeps working once the fault is gone.
        assert (await ops.lookup(runs.st_ino, b"bugs", CTX)).st_ino == run.st_ino

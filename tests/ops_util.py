"""FUSE ``Operations`` handlers awaited directly, without a kernel (s3ql's t3_fs_api pattern).

:func:`open_ops` builds the read-only stack over a real client talking to a devserver
(SimvueClient -> Reader -> Tree -> Operations); tests then ``await ops.lookup(...)`` with
:data:`CTX`, a duck-typed request context; :func:`open_writable_ops` adds an uploader
(changes are made with :data:`WCTX`). Attributes are made with :data:`POLICY`, whose
owner and mount time are fixed values no real mount has, so tests can recognise them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from helpers import settings_for

from simvuefs.backends.client import SimvueClient
from simvuefs.fuse.attrs import AttrPolicy
from simvuefs.fuse.fs import Operations
from simvuefs.fuse.tree import Tree
from simvuefs.read.reader import open_reader
from simvuefs.write.upload import open_uploader
from testbed.devserver import DevServer


class Ctx:
    """What pyfuse3 passes as ``ctx``; simvuefs only hands it on."""

    uid = os.getuid()
    gid = os.getgid()
    pid = os.getpid()
    umask = 0o022


class WriterCtx(Ctx):
    """A request from an unknown process (pid 0): flush always commits."""

    pid = 0


CTX: Any = Ctx()
WCTX: Any = WriterCtx()
POLICY = AttrPolicy(uid=4321, gid=8765, mount_time_ns=1_700_000_000 * 10**9, block_size=1 << 20)
WRITABLE = AttrPolicy(
    uid=4321, gid=8765, mount_time_ns=1_700_000_000 * 10**9, block_size=1 << 20, writable=True
)


@asynccontextmanager
async def open_ops(server: DevServer, **settings: Any) -> AsyncIterator[Operations]:
    """Yield read-only Operations over a real client talking to *server*; *settings* override
    fields of its Settings."""
    config = settings_for(server, **settings)
    async with SimvueClient.open(config) as client, open_reader(client, config) as reader:
        yield Operations(Tree(client, config), reader, POLICY)


@asynccontextmanager
async def open_writable_ops(
    server: DevServer,
    spool: os.PathLike[str],
    forget_entry: Callable[[int, str], None] | None = None,
    **settings: Any,
) -> AsyncIterator[Operations]:
    """Yield writable Operations over a real client, reader and uploader for *server*;
    *forget_entry* stands for the kernel's entry invalidation (``Tree.forget_entry``)."""
    config = settings_for(server, spool_dir=spool, spool_min_free=0, **settings)
    async with SimvueClient.open(config) as client, open_reader(client, config) as reader:
        tree = Tree(client, config)
        tree.forget_entry = forget_entry
        async with open_uploader(client, config, on_landed=tree.landed) as uploader:
            tree.start_writing(uploader)
            yield Operations(tree, reader, WRITABLE, uploader)

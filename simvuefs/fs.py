"""The FUSE request handlers: thin, and all behind one error boundary.

Invariants:

- Every request handler is wrapped in :func:`fuse_errors`, so only ``pyfuse3.FUSEError``
  ever reaches pyfuse3 (anything else would kill the mount, design guide 4.1).
  ``init`` and ``forget`` never raise at all.
- Lookup counts: a successful ``lookup`` adds 1 (``.`` and ``..`` included), every
  ``readdir`` entry the kernel accepted adds 1 except ``.`` and ``..``; ``forget``
  subtracts; :meth:`Operations.forget_all` clears the rest at unmount.
- ``readdir`` works on a snapshot taken by ``opendir`` (one listing per open directory), so
  offsets are positions in an immutable list and never skip or repeat entries.
- Network calls happen only through the tree (listings, sizes) and the reader (content),
  which finish within ``settings.request_timeout`` or raise ``DeadlineExceeded``.
- The mount is read-only: every write-type request fails with ``EROFS``.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyfuse3

from simvuefs.attrs import AttrPolicy, entry_attributes, extended_attributes
from simvuefs.errors import NotFound, SimvueError, errno_for
from simvuefs.inodes import Node, NodeKind

if TYPE_CHECKING:
    from pyfuse3 import (
        EntryAttributes,
        FileHandleT,
        FileInfo,
        FileNameT,
        FlagT,
        InodeT,
        ModeT,
        ReaddirToken,
        RequestContext,
        SetattrFields,
        StatvfsData,
        XAttrNameT,
    )

    from simvuefs.reader import Reader, ReadHandle
    from simvuefs.tree import Tree

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_DOTS = (b".", b"..")
MAX_NAME_BYTES = 255
WARNING_INTERVAL = 10.0
"""A failing server makes every request fail the same way: warn once per this many seconds."""
_last_warning: dict[tuple[str, type[SimvueError]], float] = {}


def _level_for(handler: str, exc: SimvueError) -> int:
    """WARNING at most once per handler and error type every WARNING_INTERVAL, else DEBUG.

    NotFound is routine (ENOENT) and always DEBUG.
    """
    if isinstance(exc, NotFound):
        return logging.DEBUG
    key = (handler, type(exc))
    now = time.monotonic()
    last = _last_warning.get(key)
    if last is not None and now - last < WARNING_INTERVAL:
        return logging.DEBUG
    _last_warning[key] = now
    return logging.WARNING


def fuse_errors(handler: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn every exception of *handler* into a ``FUSEError`` (the error boundary).

    ``FUSEError`` passes through; ``simvuefs.errors.*`` become their errno with one log
    line; anything else is logged with its traceback and becomes ``EIO``. ``BaseException``
    (``trio.Cancelled``, ``KeyboardInterrupt``) is never caught.
    """

    @functools.wraps(handler)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except SimvueError as exc:
            code = errno_for(exc)
            level = _level_for(handler.__name__, exc)
            log.log(level, "%s: %s (%s)", handler.__name__, exc, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s failed unexpectedly (EIO)", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return guarded


def _read_only() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.EROFS)


@dataclass(frozen=True, slots=True)
class _OpenDir:
    """A directory listing taken at ``opendir``: ``(name, node)`` in ``readdir`` order."""

    entries: Sequence[tuple[bytes, Node]]


class Operations(pyfuse3.Operations):
    """simvuefs's ``pyfuse3.Operations``: look up, list, stat and read; refuse writes."""

    def __init__(self, tree: Tree, reader: Reader, policy: AttrPolicy) -> None:
        super().__init__()
        self._tree = tree
        self._table = tree.table
        self._reader = reader
        self._policy = policy
        self._handles = itertools.count(1)
        self._dirs: dict[int, _OpenDir] = {}
        self._files: dict[int, ReadHandle] = {}

    # -- helpers --------------------------------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self._table.get(inode)
        if node is None:
            log.error("request for unknown inode %d", inode)
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node

    def _dir_node(self, inode: int) -> Node:
        node = self._node(inode)
        if not node.kind.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node

    def _attributes(self, node: Node) -> EntryAttributes:
        in_run = node.kind in (NodeKind.CATEGORY, NodeKind.DIR, NodeKind.FILE)
        ttl = self._tree.listing_ttl(node.run if in_run else None)
        if node.kind is NodeKind.FILE:
            # Pick up a size learned through another node of the same artifact.
            self._tree.known_size(node)
        return entry_attributes(node, self._policy, ttl)

    async def _exact(self, node: Node) -> Node:
        """Make the size of file *node* exact (object artifacts need a request once)."""
        if node.kind is NodeKind.FILE:
            await self._tree.exact_size(node)
        return node

    async def _xattrs(self, inode: int) -> dict[str, str]:
        node = self._node(inode)
        await self._tree.refresh(node)  # a run's status changes; files' values never do
        return extended_attributes(node)

    def forget_all(self) -> int:
        """Drop every lookup the kernel still holds (after ``main`` returns); return how many."""
        return self._table.forget_all()

    # -- lifecycle (never raise) ----------------------------------------------------------

    def init(self) -> None:
        log.debug("FUSE session started")

    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        try:
            for inode, count in inode_list:
                self._table.forget(inode, count)
        except Exception:
            log.exception("forget failed")

    # -- names and attributes -------------------------------------------------------------

    @fuse_errors
    async def lookup(
        self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        parent = self._dir_node(parent_inode)
        if name == b".":
            node = parent
        elif name == b"..":
            node = self._node(parent.parent)
        else:
            if len(name) > MAX_NAME_BYTES:
                raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
            found = await self._tree.lookup(parent, os.fsdecode(name))
            if found is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            node = await self._exact(found)
        attr = self._attributes(node)
        self._table.add_lookup(node.inode)  # last: only a lookup that succeeds counts
        return attr

    @fuse_errors
    async def getattr(self, inode: InodeT, ctx: RequestContext) -> EntryAttributes:
        return self._attributes(await self._exact(self._node(inode)))

    @fuse_errors
    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> bytes:
        value = (await self._xattrs(inode)).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value.encode("utf-8")

    @fuse_errors
    async def listxattr(self, inode: InodeT, ctx: RequestContext) -> Sequence[XAttrNameT]:
        return [os.fsencode(name) for name in await self._xattrs(inode)]

    @fuse_errors
    async def statfs(self, ctx: RequestContext) -> StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = self._policy.block_size
        data.f_frsize = self._policy.block_size
        data.f_blocks = data.f_bfree = data.f_bavail = 0
        data.f_files = len(self._table)
        data.f_ffree = data.f_favail = 0
        data.f_namemax = MAX_NAME_BYTES
        return data

    # -- directories ----------------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode: InodeT, ctx: RequestContext) -> FileHandleT:
        node = self._dir_node(inode)
        children = await self._tree.children(node)
        entries: list[tuple[bytes, Node]] = [(b".", node), (b"..", self._node(node.parent))]
        entries.extend((os.fsencode(name), child) for name, child in children)
        fh = next(self._handles)
        self._dirs[fh] = _OpenDir(entries)
        return fh

    @fuse_errors
    async def readdir(self, fh: FileHandleT, start_id: int, token: ReaddirToken) -> None:
        listing = self._dirs.get(fh)
        if listing is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        for index in range(start_id, len(listing.entries)):
            name, node = listing.entries[index]
            if not pyfuse3.readdir_reply(token, name, self._attributes(node), index + 1):
                return
            if name not in _DOTS:
                self._table.add_lookup(node.inode)

    @fuse_errors
    async def releasedir(self, fh: FileHandleT) -> None:
        self._dirs.pop(fh, None)

    @fuse_errors
    async def fsyncdir(self, fh: FileHandleT, datasync: bool) -> None:
        return None

    # -- files ----------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: InodeT, flags: FlagT, ctx: RequestContext) -> FileInfo:
        node = self._node(inode)
        if node.kind is not NodeKind.FILE or node.artifact is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise _read_only()
        size = await self._tree.exact_size(node)
        handle = self._reader.open(node.artifact, size)
        fh = next(self._handles)
        self._files[fh] = handle
        # Artifacts are immutable and their inode is tied to the artifact id, so the page
        # cache stays valid across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @fuse_errors
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        handle = self._files.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await self._reader.read(handle, off, size)

    @fuse_errors
    async def flush(self, fh: FileHandleT) -> None:
        return None

    @fuse_errors
    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        return None

    @fuse_errors
    async def release(self, fh: FileHandleT) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None:
            await self._reader.release(handle)

    # -- write-type requests: the mount is read-only --------------------------------------

    @fuse_errors
    async def setattr(
        self,
        inode: InodeT,
        attr: EntryAttributes,
        fields: SetattrFields,
        fh: FileHandleT | None,
        ctx: RequestContext,
    ) -> EntryAttributes:
        raise _read_only()

    @fuse_errors
    async def mknod(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, rdev: int, ctx: RequestContext
    ) -> EntryAttributes:
        raise _read_only()

    @fuse_errors
    async def mkdir(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, ctx: RequestContext
    ) -> EntryAttributes:
        raise _read_only()

    @fuse_errors
    async def unlink(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        raise _read_only()

    @fuse_errors
    async def rmdir(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        raise _read_only()

    @fuse_errors
    async def symlink(
        self, parent_inode: InodeT, name: FileNameT, target: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        raise _read_only()

    @fuse_errors
    async def rename(
        self,
        parent_inode_old: InodeT,
        name_old: FileNameT,
        parent_inode_new: InodeT,
        name_new: FileNameT,
        flags: FlagT,
        ctx: RequestContext,
    ) -> None:
        raise _read_only()

    @fuse_errors
    async def link(
        self, inode: InodeT, new_parent_inode: InodeT, new_name: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        raise _read_only()

    @fuse_errors
    async def create(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, flags: FlagT, ctx: RequestContext
    ) -> tuple[FileInfo, EntryAttributes]:
        raise _read_only()

    @fuse_errors
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        raise _read_only()

    @fuse_errors
    async def setxattr(
        self, inode: InodeT, name: XAttrNameT, value: bytes, ctx: RequestContext
    ) -> None:
        raise _read_only()

    @fuse_errors
    async def removexattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> None:
        raise _read_only()

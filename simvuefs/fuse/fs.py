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
- Network calls happen only through the tree (listings, sizes), the reader (content) and
  the uploader (commits), each within its own deadline.
- Writes (SEMANTICS.md "Writing"): only inside ``input/`` of a writable mount; everything
  else fails with ``EROFS``. A file written here is a :class:`~simvuefs.write.staged.StagedFile`
  (``node.staged``); its handles live in ``_written``, artifacts' handles in ``_files``.
- Upload at close: ``flush`` of a writing handle commits the file (upload now, the error is
  what ``close()`` returns), but only once no other handle writes it (several may: two
  SQLite connections) and the process that opened it holds no other descriptor for
  writing it (:func:`holds_for_writing`): a forked child closing an
  inherited descriptor, or a shell closing the original after ``dup2``, must not freeze a
  file mid-write. ``release`` commits only a file that no flush
  could commit (and logs the outcome: its errors reach nobody).
- ``fsync`` of a file being written keeps a durable copy of it (``Uploader.checkpoint``)
  and never ends it. Opening an input artifact for writing (or ``truncate``) starts a new
  file that replaces it, where the run's state allows (``Tree.edit_file``).
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyfuse3
import trio

from simvuefs.errors import LocalError, NotFound, SimvueError, errno_for
from simvuefs.fuse.attrs import (
    MAX_TIMEOUT,
    XATTR_PREFIX,
    AttrPolicy,
    entry_attributes,
    extended_attributes,
)
from simvuefs.fuse.inodes import InodeTable, Node, NodeKind
from simvuefs.fuse.names import MAX_NAME_BYTES
from simvuefs.fuse.overlay import WRITABLE_CATEGORY as INPUT
from simvuefs.fuse.runinfo import run_document
from simvuefs.localio import RateLimitedWarner
from simvuefs.write.staged import FileState, StagedFile

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

    from simvuefs.fuse.tree import Tree
    from simvuefs.read.reader import Reader, ReadHandle
    from simvuefs.write.upload import Uploader

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_DOTS = (b".", b"..")
WARNING_INTERVAL = 10.0
"""A failing server makes every request fail the same way: warn once per this many seconds."""
_warner = RateLimitedWarner(log, WARNING_INTERVAL)
"""Warns at most once per handler, error type and errno every WARNING_INTERVAL."""


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
            name = errno.errorcode.get(code, code)
            if isinstance(exc, NotFound):  # routine (ENOENT): never a warning
                log.debug("%s: %s (%s)", handler.__name__, exc, name)
            else:
                key = (handler.__name__, type(exc), exc.errno if isinstance(exc, LocalError) else 0)
                _warner.warn("%s: %s (%s)", handler.__name__, exc, name, key=key)
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


@dataclass(frozen=True, slots=True)
class _Written:
    """An open handle of a file written through the mount: *write* if it may write;
    *opener* is the process (thread group id) that opened it, 0 if unknown."""

    file: StagedFile
    inode: int
    write: bool
    opener: int


def process_of(pid: int) -> int:
    """Return the thread group id (the process) of thread *pid*, or 0 if it is unknown."""
    if pid <= 0:
        return 0
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def holds_for_writing(pid: int, mount_id: int | None, inode: int) -> bool:
    """True when process *pid* has a descriptor open for writing on *inode* of the mount
    *mount_id* (any mount when None), from ``/proc/<pid>/fdinfo``; False if it cannot tell.

    Reads only procfs, never the mount itself (that could wait on this very daemon).
    """
    directory = f"/proc/{pid}/fdinfo"
    try:
        descriptors = os.listdir(directory)
    except OSError:
        return False
    for fd in descriptors:
        try:
            with open(f"{directory}/{fd}", encoding="utf-8") as info:
                fields = dict(line.split(":", 1) for line in info if ":" in line)
            if int(fields.get("ino", "0")) != inode:
                continue
            if mount_id is not None and int(fields.get("mnt_id", "-1")) != mount_id:
                continue
            if int(fields.get("flags", "0"), 8) & os.O_ACCMODE != os.O_RDONLY:
                return True
        except (OSError, ValueError):
            continue
    return False


PF_EXITING = 0x4
"""``task->flags`` bit of a task that is exiting (Linux ``include/linux/sched.h``)."""


def killing_signal(pid: int) -> int:
    """The signal that is ending process *pid*, or 0 (running, exiting normally, or unknown).

    While a task exits, ``/proc/<pid>/stat`` shows ``PF_EXITING`` in ``flags`` (field 9) and
    the exit status in ``exit_code`` (field 52): a signal's number in its low 7 bits, or the
    ``exit()`` status shifted left by 8. The kernel closes the files of a dying process
    (``exit_files``, hence FUSE ``flush``) after it set both, so ``flush`` can tell a writer
    killed half-way from one that exited without closing. Needs the right to ptrace *pid*
    (root, or the same user) for ``exit_code``; without it the field reads 0.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return 0
    fields = text[text.rfind(")") + 2 :].split()  # from field 3 on; comm may hold anything
    try:
        flags, exit_code = int(fields[9 - 3]), int(fields[52 - 3])
    except (IndexError, ValueError):
        return 0
    return exit_code & 0x7F if flags & PF_EXITING else 0


class Operations(pyfuse3.Operations):
    """simvuefs's ``pyfuse3.Operations``: look up, list, stat and read; write into ``input/``
    through *uploader* (None: a read-only mount, every write-type request fails ``EROFS``).

    *mount_id* (the mount's id in ``/proc/self/mountinfo``) is set by ``mount.py`` once the
    mount exists; it makes :func:`holds_for_writing` exact.
    """

    def __init__(
        self, tree: Tree, reader: Reader, policy: AttrPolicy, uploader: Uploader | None = None
    ) -> None:
        super().__init__()
        self._tree = tree
        self._table = tree.table
        self._reader = reader
        self._policy = policy
        self._uploader = uploader
        self._handles = itertools.count(1)
        self._dirs: dict[int, _OpenDir] = {}
        self._files: dict[int, ReadHandle] = {}
        self._written: dict[int, _Written] = {}
        self._documents: dict[int, bytes] = {}  # open .simvue-run.json: content at open
        self.mount_id: int | None = None

    @property
    def table(self) -> InodeTable:
        """The inode table: the nodes and the lookup counts the kernel holds."""
        return self._table

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

    def _negative_entry(self, parent: Node) -> EntryAttributes:
        """The answer "no such name in *parent*", which the kernel remembers for as long
        as the listing that says so is trusted: repeated misses (``PATH`` searches,
        ``stat`` of files that do not exist) then cost no request, not even to this daemon."""
        in_run = parent.kind in (NodeKind.CATEGORY, NodeKind.DIR)
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = 0  # a negative entry (pyfuse3 lookup docs)
        attr.entry_timeout = min(
            self._tree.listing_ttl(parent.run if in_run else None), MAX_TIMEOUT
        )
        return attr

    async def _exact(self, node: Node) -> Node:
        """Make the size of file *node* exact (object artifacts need a request once); bring
        the run record of nodes in ``input/`` up to date (their modes follow its state)."""
        if node.category == INPUT:
            self._tree.follow_run_nowait(node)
        if node.kind is NodeKind.FILE:
            await self._tree.exact_size(node)
        elif node.kind is NodeKind.RUN_INFO:
            await self._tree.refresh(node)
        return node

    async def _xattrs(self, inode: int) -> dict[str, str]:
        node = self._node(inode)
        await self._tree.refresh(node)  # a run's status changes; files' values never do
        mode = None
        if node.kind in (NodeKind.CATEGORY, NodeKind.DIR) and node.category == INPUT:
            mode = await self._tree.input_mode(node)
        return extended_attributes(node, mode)

    def _refuse_change(self, node: Node, inside_input: int) -> pyfuse3.FUSEError:
        """The error for a change nothing supports: *inside_input* in ``input/``, else EROFS."""
        return pyfuse3.FUSEError(inside_input if self._tree.writable(node) else errno.EROFS)

    def _name(self, name: bytes) -> str:
        if len(name) > MAX_NAME_BYTES:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        return os.fsdecode(name)

    def _uploading(self) -> Uploader:
        if self._uploader is None:
            raise _read_only()
        return self._uploader

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
            found = await self._tree.lookup(parent, self._name(name))
            if found is None:
                return self._negative_entry(parent)
            node = await self._exact(found)
        attr = self._attributes(node)
        self._table.add_lookup(node.inode)  # last: only a lookup that succeeds counts
        return attr

    @fuse_errors
    async def getattr(self, inode: InodeT, ctx: RequestContext) -> EntryAttributes:
        return self._attributes(await self._exact(self._node(inode)))

    @fuse_errors
    async def readlink(self, inode: InodeT, ctx: RequestContext) -> FileNameT:
        node = self._node(inode)
        if node.kind is not NodeKind.LINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(await self._tree.link_target(node))

    @fuse_errors
    async def setattr(
        self,
        inode: InodeT,
        attr: EntryAttributes,
        fields: SetattrFields,
        fh: FileHandleT | None,
        ctx: RequestContext,
    ) -> EntryAttributes:
        node = self._node(inode)
        if not self._tree.writable(node):
            raise _read_only()
        if fields.update_size:
            await self._resize(node, attr.st_size)
        # Modes, owners and times are accepted and not kept (cp -p, rsync -a, tar, copy2).
        return self._attributes(await self._exact(node))

    async def _resize(self, node: Node, size: int) -> None:
        if node.kind is not NodeKind.FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        local = node.unfinished
        if local is not None and local.state in (FileState.STAGED, FileState.DISCARDED):
            await self._uploading().truncate(local, size)  # DISCARDED: unlinked, still open
        elif size != await self._tree.exact_size(node):
            # ``truncate PATH``: a new file replaces the input, and lands at once.
            uploader = self._uploading()
            f = await self._tree.edit_file(node, keep_content=size > 0)
            try:
                await uploader.truncate(f, size)
                await uploader.commit(f)
            finally:
                await uploader.release(f, write=True)

    @fuse_errors
    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> bytes:
        key = os.fsdecode(name)
        if not key.startswith(XATTR_PREFIX):
            # ls -l asks every file for security.selinux and ACLs: answer without a refresh.
            self._node(inode)
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = (await self._xattrs(inode)).get(key)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value.encode("utf-8")

    @fuse_errors
    async def listxattr(self, inode: InodeT, ctx: RequestContext) -> Sequence[XAttrNameT]:
        return [os.fsencode(name) for name in await self._xattrs(inode)]

    @fuse_errors
    async def setxattr(
        self, inode: InodeT, name: XAttrNameT, value: bytes, ctx: RequestContext
    ) -> None:
        # ENOTSUP in input/: cp -a and shutil.copy2 skip attributes quietly on ENOTSUP.
        raise self._refuse_change(self._node(inode), errno.ENOTSUP)

    @fuse_errors
    async def removexattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> None:
        raise self._refuse_change(self._node(inode), errno.ENOTSUP)

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

    @fuse_errors
    async def mkdir(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, ctx: RequestContext
    ) -> EntryAttributes:
        parent = self._dir_node(parent_inode)
        node = await self._tree.make_dir(parent, self._name(name))
        attr = self._attributes(node)
        self._table.add_lookup(node.inode)
        return attr

    @fuse_errors
    async def rmdir(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        await self._tree.remove_dir(self._dir_node(parent_inode), self._name(name))

    @fuse_errors
    async def unlink(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        await self._tree.remove_file(self._dir_node(parent_inode), self._name(name))

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
        old_parent = self._dir_node(parent_inode_old)
        new_parent = self._dir_node(parent_inode_new)
        if not (self._tree.writable(old_parent) and self._tree.writable(new_parent)):
            raise _read_only()
        if flags & ~pyfuse3.RENAME_NOREPLACE:
            raise pyfuse3.FUSEError(errno.EINVAL)  # RENAME_EXCHANGE, RENAME_WHITEOUT
        old_name = self._name(name_old)
        node = await self._tree.lookup(old_parent, old_name)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        await self._tree.rename(node, old_name, new_parent, self._name(name_new))

    @fuse_errors
    async def mknod(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, rdev: int, ctx: RequestContext
    ) -> EntryAttributes:
        raise self._refuse_change(self._dir_node(parent_inode), errno.EPERM)

    @fuse_errors
    async def symlink(
        self, parent_inode: InodeT, name: FileNameT, target: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        raise self._refuse_change(self._dir_node(parent_inode), errno.EPERM)

    @fuse_errors
    async def link(
        self, inode: InodeT, new_parent_inode: InodeT, new_name: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        raise self._refuse_change(self._dir_node(new_parent_inode), errno.EPERM)

    # -- files ----------------------------------------------------------------------------

    @fuse_errors
    async def create(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, flags: FlagT, ctx: RequestContext
    ) -> tuple[FileInfo, EntryAttributes]:
        parent = self._dir_node(parent_inode)
        node = await self._tree.create_file(parent, self._name(name))
        assert node.staged is not None
        opener = await trio.to_thread.run_sync(process_of, ctx.pid)
        fh = next(self._handles)
        self._written[fh] = _Written(node.staged, node.inode, True, opener)
        attr = self._attributes(node)
        self._table.add_lookup(node.inode)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False), attr

    @fuse_errors
    async def open(self, inode: InodeT, flags: FlagT, ctx: RequestContext) -> FileInfo:
        node = self._node(inode)
        write = flags & os.O_ACCMODE != os.O_RDONLY
        if node.kind is NodeKind.RUN_INFO:
            return await self._open_run_info(node, write or bool(flags & os.O_TRUNC))
        if node.kind is not NodeKind.FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        local = node.unfinished
        if local is not None and local.state is not FileState.DISCARDED:
            return await self._open_written(node, local, flags, write, ctx)
        if write or flags & os.O_TRUNC:
            return await self._open_to_replace(node, flags, ctx)
        if node.artifact is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        size = await self._tree.exact_size(node)
        handle = self._reader.open(node.artifact, size)
        fh = next(self._handles)
        self._files[fh] = handle
        # Artifacts are immutable and their inode is tied to the artifact id, so the page
        # cache stays valid across opens, unless the content just failed verification.
        return pyfuse3.FileInfo(fh=fh, keep_cache=handle.keep_cache)

    async def _open_to_replace(self, node: Node, flags: int, ctx: RequestContext) -> FileInfo:
        """Open an input artifact for writing: a new file that replaces it, where the run's
        state allows (``Tree.edit_file``); its content is fetched first unless ``O_TRUNC``."""
        if not self._tree.writable(node):
            raise _read_only()
        f = await self._tree.edit_file(node, keep_content=not flags & os.O_TRUNC)
        opener = await trio.to_thread.run_sync(process_of, ctx.pid)
        fh = next(self._handles)
        self._written[fh] = _Written(f, node.inode, True, opener)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False)

    async def _open_run_info(self, node: Node, write: bool) -> FileInfo:
        """Open ``.simvue-run.json``: its content as of now, fixed for this handle."""
        if write:
            raise self._refuse_change(node, errno.EACCES)
        await self._tree.refresh(node)
        assert node.run is not None
        fh = next(self._handles)
        self._documents[fh] = run_document(node.run)
        # The record changes with the run: no page cache, and direct I/O so that reads end
        # where this content ends, not at a size the kernel cached before a change.
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=True)

    async def _open_written(
        self, node: Node, f: StagedFile, flags: int, write: bool, ctx: RequestContext
    ) -> FileInfo:
        """Open a file written here that has not landed: its content is in the spool."""
        uploader = self._uploading()
        if flags & os.O_TRUNC and f.state is not FileState.STAGED:
            raise LocalError(f"{f.name} is uploading and can no longer change", errno=errno.EACCES)
        await uploader.open(f, write=write)
        try:
            if flags & os.O_TRUNC:
                await uploader.truncate(f, 0)
            opener = await trio.to_thread.run_sync(process_of, ctx.pid) if write else 0
        except BaseException:
            await uploader.release(f, write=write)
            raise
        fh = next(self._handles)
        self._written[fh] = _Written(f, node.inode, write, opener)
        # Its content and size change while it is written: no page cache across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=False)

    @fuse_errors
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        written = self._written.get(fh)
        if written is not None:
            return await self._uploading().read(written.file, off, size)
        document = self._documents.get(fh)
        if document is not None:
            return document[off : off + size]
        handle = self._files.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await self._reader.read(handle, off, size)

    @fuse_errors
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        uploader = self._uploading()
        written = self._written.get(fh)
        if written is None or not written.write:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await uploader.write(written.file, off, buf)

    @fuse_errors
    async def flush(self, fh: FileHandleT) -> None:
        written = self._written.get(fh)
        if written is None or not written.write:
            return
        f = written.file
        if f.state not in (FileState.STAGED, FileState.PENDING):
            return
        if any(w.file is f and w.write for h, w in self._written.items() if h != fh):
            log.debug("flush of %r: another handle still writes it", f)
            return
        if written.opener and await trio.to_thread.run_sync(
            holds_for_writing, written.opener, self.mount_id, written.inode
        ):
            log.debug("flush of %r: process %d still writes it", f, written.opener)
            return
        signal = written.opener and await trio.to_thread.run_sync(killing_signal, written.opener)
        if signal and f.state is FileState.STAGED:
            await self._uploading().abandon(
                f, f"process {written.opener} was killed by signal {signal} before it closed it"
            )
            self._tree.abandoned(f)
            return
        await self._uploading().commit(f)

    @fuse_errors
    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        written = self._written.get(fh)
        if written is not None and written.write and written.file.state is FileState.STAGED:
            await self._uploading().checkpoint(written.file)

    @fuse_errors
    async def release(self, fh: FileHandleT) -> None:
        written = self._written.pop(fh, None)
        if written is not None:
            await self._release_written(written)
            return
        self._documents.pop(fh, None)
        handle = self._files.pop(fh, None)
        if handle is not None:
            await self._reader.release(handle)

    async def _release_written(self, written: _Written) -> None:
        """Forget a handle; commit a file whose writers are all gone but no flush could."""
        uploader = self._uploading()
        f = written.file
        await uploader.release(f, write=written.write)
        others = any(w.file is f and w.write for w in self._written.values())
        if not written.write or f.state is not FileState.STAGED or others:
            return
        log.info("uploading %s of run %s at release: no close could", f.name, f.run_id)
        try:
            await uploader.commit(f)
        except SimvueError as exc:
            log.warning("upload of %s at release failed (it stays pending): %s", f.name, exc)

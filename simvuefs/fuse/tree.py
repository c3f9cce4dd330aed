"""Directory semantics: what each directory contains, backed by cached server listings.

The tree is ``/runs/<run>/<input|output|code>/<artifact name>``, beside it the read-only
views ``by-id/``, ``folders/`` and ``tags/`` of links into ``runs/`` (``views.py``). What
each run and artifact is called (``/`` in run names, ``<name>@<id>`` for duplicates, names
that cannot be shown) is decided in ``names.py``; this module decides which nodes a
directory holds. Every run directory also holds ``.simvue-run.json`` (``runinfo.py``), found
by lookup but not listed: a run directory lists what the server stores, so ``find``,
``du``, ``cp -r`` and ``tar`` see exactly the run's artifacts. Names that cannot be shown
are logged once per object.

Listings are fetched through :class:`simvuefs.read.cache.MetaCache`, so requests grow with the
number of runs, never with the number of artifacts: ``runs/`` costs one ``list_runs`` per
metadata TTL (pages of 100, the protocol's largest), and the three category directories of
a run (and every directory below them) one unfiltered ``list_artifacts(run)`` per TTL
(``finished_run_ttl`` once the run is finished), split by each entry's ``category``. A
server whose entries do not carry their category (the protocol does not promise it) gets
one ``list_artifacts(run, category)`` per category instead, from then on. Lookups of
names that do not exist are answered from the same cached listings (no request within the
TTL) and handed to the kernel as negative entries for that TTL (``fs.py``).
A walk that needs the artifacts of run after run in the order of the last ``runs/``
listing (``find``, ``du``; or by name: ``ls -R``) gets the next runs listed ahead,
concurrently and bounded, through the same caches, and a ``runs/`` listing in use is
listed again shortly before it expires, so that no lookup waits for it (``lookahead.py``).

Writing (only in ``input/`` of the user's own runs, only when the tree has an uploader;
runs of other users, shared with the user, are read-only: :meth:`Tree.owns`): files written
through the mount and directories made with ``mkdir`` are kept in a
:class:`~simvuefs.fuse.overlay.LocalFiles` per run and category and shown on top of the
server's listing, so the metadata TTL never hides this mount's own writes (merge rules in
``overlay.py``). A written file keeps its inode when it lands: the artifact's key becomes
an alias of the node made at ``create``.
How ``input/`` may change depends on the run's state (SEMANTICS.md "Writing"), read from
the (cached) runs listing at each change, so it follows the server within the metadata
TTL: *editable* while the run is ``created`` (inputs can be overwritten, changed in place,
removed and renamed: the uploader replaces and deletes artifacts), *append-only* once it
has started (new files only), *read-only* in runs of other users and read-only mounts. In
every state, a file this mount uploaded less than ``LANDED_RETENTION`` seconds ago may
still be renamed, replaced or removed by the tool that wrote it (transient files leave no
artifact behind). A change that started (an open for writing) completes in the mode it
started in.
Memory does not grow with the files written: once a landed file is *settled* (landed
``LANDED_RETENTION`` seconds ago, so it can no longer land again under another name; listed
by the server, or left out by a listing asked after its landing, so the overlay no longer
shows it; no handle open on it), its node lets go of the write path's record
(``node.staged``) and of the key made at ``create``, and is then like the node of any
artifact (:meth:`Tree.settle_landed`, at each landing and listing); the kernel is asked to
drop its entry (``forget_entry``), and the node goes once it forgets the inode
(``InodeTable.release``: a later lookup makes it again, same inode number), so a settled
file keeps only its listing record and its key.
A directory listed again keeps the records of the artifacts that did not change
(``records.py``): each TTL makes records only for new and changed ones. A listing of at
least ``RELEASE_AFTER`` artifacts, once it replaced the one before in its cache, hands the
heap's freed pages back to the system (``heap.py``): what the resident size keeps is then
what lives, not the peak of every listing parsed at each TTL.
Names of new files and directories must pass the artifact-name rule
(:func:`simvuefs.models.check_artifact_name`) at once, so a bad name fails at
``create``/``mkdir`` with EINVAL, never at ``close``.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import trio

from simvuefs.errors import LocalError, NotFound, SimvueError
from simvuefs.fuse.heap import release_freed
from simvuefs.fuse.inodes import ROOT_INODE, InodeTable, Node, NodeKind
from simvuefs.fuse.lookahead import RefreshAhead, RunLookahead
from simvuefs.fuse.names import (
    CategoryListing,
    Entry,
    Problem,
    RunNames,
    join_path,
    name_artifacts,
    name_runs,
)
from simvuefs.fuse.overlay import (
    WRITABLE_CATEGORY,
    LocalFiles,
    merge_entries,
    merge_entry,
    server_dir_empty,
)
from simvuefs.fuse.records import ListedRecords
from simvuefs.fuse.runinfo import RUN_INFO_NAME
from simvuefs.fuse.views import (
    BY_ID_DIR,
    FOLDERS_DIR,
    RUNS_DIR,
    TAGS_DIR,
    Views,
    build_views,
    folder_depth,
    link_target,
)
from simvuefs.models import CATEGORIES, Artifact, Run, check_artifact_name
from simvuefs.read.cache import MetaCache
from simvuefs.write.landing import LANDED_RETENTION
from simvuefs.write.staged import FileState, StagedFile

if TYPE_CHECKING:
    import trio

    from simvuefs.backends.protocol import SimvueBackend
    from simvuefs.config import Settings
    from simvuefs.write.upload import Uploader

log = logging.getLogger(__name__)

# How many category listings and artifact sizes to remember (both are small records).
LISTINGS_CACHED = 4096
SIZES_CACHED = 65536
EDITABLE = "editable"
APPEND_ONLY = "append-only"
READ_ONLY = "read-only"
"""How ``input/`` of a run may change (:meth:`Tree.input_mode`; ``user.simvue.input_mode``)."""
EDITABLE_STATUS = "created"
"""The run status in which inputs can be changed: prepared, not started yet."""
RELEASE_AFTER = 200
"""Artifacts: a listing at least this long, once it replaced the one before, gives the heap's
freed pages back to the system (``heap.py``; a listing of 200 frees about 0.3 MiB, its
answer and decoded text: smaller ones are not worth the walk). With 1,000, a directory
growing from 260 to 1,000 files left 9 MiB of freed listings resident (docs/reliability.md)."""
# Warnings about unshowable names are logged once per object; forget them past this many.
WARNED_MAX = 10000

VIEW_ROOTS: dict[str, tuple[tuple[str, ...], NodeKind]] = {
    BY_ID_DIR: (("by-id",), NodeKind.BY_ID),
    FOLDERS_DIR: (("folder", ""), NodeKind.FOLDER),
    TAGS_DIR: (("tags",), NodeKind.TAGS),
}
"""The views in the root, in listing order after ``runs/``: name -> (key, kind)."""
VIEW_KINDS = frozenset({NodeKind.BY_ID, NodeKind.FOLDER, NodeKind.TAGS, NodeKind.TAG})

T = TypeVar("T")


def _pick(entries: Mapping[str, T], only: str | None) -> list[tuple[str, T]]:
    """All of *entries*, or just the one called *only* (none if there is none)."""
    if only is None:
        return list(entries.items())
    return [(only, entries[only])] if only in entries else []


@dataclass(frozen=True)
class RunSelection:
    """Which runs a mount shows (``--folder``, ``--run``, ``--own-runs-only``); the default
    shows all the server lists: the user's own runs and those shared with them.

    *folder*: only runs in this folder or below it (``/demo`` takes ``/demo`` and
    ``/demo/cfd``, not ``/demonstration``). *runs*: only runs whose id or name is one of
    these. *own_only*: only the user's own runs (the server's ``user == self``; the tree
    also drops any run it knows to be another user's). All given: runs that pass all.
    """

    folder: str | None = None
    runs: frozenset[str] = frozenset()
    own_only: bool = False

    def matches(self, run: Run, user: str | None = None) -> bool:
        """True when *run* is shown to *user* (the mounting user, None if unknown)."""
        if self.runs and run.id not in self.runs and run.name not in self.runs:
            return False
        if self.own_only and run.belongs_to_another(user):
            return False
        if self.folder is None:
            return True
        base = self.folder.rstrip("/")
        return not base or run.folder == base or run.folder.startswith(base + "/")

    def server_filters(self) -> tuple[str, ...]:
        """Filters (protocol 3.4 grammar) that let the server leave out runs not shown.

        A superset of :meth:`matches`, which stays the check: the grammar has no "folder
        or below it", so ``--folder /demo`` asks for folder paths containing ``/demo``
        (which also brings ``/demonstration`` and ``/x/demo``).
        """
        base = (self.folder or "").rstrip("/")
        own = ("user == self",) if self.own_only else ()
        return (f"folder.path contains {base}",) + own if base else own


class Tree:
    """The directory structure of a mount, backed by the server through cached listings.

    Nodes handed out are owned by :attr:`table`; this class sets their run/category/artifact
    fields from the freshest listing each time it produces them. Cache expiry follows
    ``trio.current_time`` (so ``trio.testing.MockClock`` drives it in tests).

    Only the runs *selection* matches are shown (or can be looked up).

    *uploader* is None for a read-only tree; :meth:`start_writing` sets it once, at mount
    start, and :meth:`landed` must be the uploader's ``on_landed`` callback.

    *user* is who the server knows the mounting user as (``SimvueBackend.whoami``; None:
    unknown): runs of other users (shared with them) are shown, unless the selection is
    *own_only*, but their ``input/`` takes no new files (:meth:`owns`).
    """

    def __init__(
        self,
        client: SimvueBackend,
        settings: Settings,
        selection: RunSelection | None = None,
        user: str | None = None,
    ) -> None:
        self.table = InodeTable()
        self._selection = selection or RunSelection()
        self.user = user
        self.uploader: Uploader | None = None
        self._client = client
        self._settings = settings
        self._runs: MetaCache[str, RunNames] = MetaCache(1)
        self._listings: MetaCache[tuple[str, str], CategoryListing] = MetaCache(LISTINGS_CACHED)
        self._run_listings: MetaCache[str, Mapping[str, CategoryListing] | None] = MetaCache(
            LISTINGS_CACHED
        )
        self._listing_by_run = True  # until a run listing comes without categories
        self._release_due = False  # a long listing was loaded: release_freed once it is stored
        self._lookahead = RunLookahead(self._list_ahead)
        self._runs_refresh = RefreshAhead(self._runs, RUNS_DIR, self._load_run_names)
        self._records = ListedRecords(LISTINGS_CACHED)
        self._sizes: MetaCache[str, int] = MetaCache(SIZES_CACHED)
        self._warned: set[Problem] = set()
        self._local: dict[tuple[str, str], LocalFiles] = {}
        self._written: dict[str, Node] = {}  # spool id -> node of a file written here
        # spool id -> trio time of its last landing, oldest first (settle_landed's queue)
        self._landed_at: dict[str, float] = {}
        self._landings = 0  # landings so far: a listing asked now accounts for all of them
        # The mount's (while it serves): tells the kernel to drop a directory entry, given the
        # directory's inode and the name; None in tests without a kernel.
        self.forget_entry: Callable[[int, str], None] | None = None
        self._views: tuple[RunNames, Views] | None = None  # the views of the last listing
        self._shared_noted = False  # whether the log says why shared runs are read-only
        # The root's entries, made first so that their inodes (the listing order) are fixed.
        self.runs_node()
        for key, kind in VIEW_ROOTS.values():
            self.table.ensure(key, kind, ROOT_INODE)

    # -- timeouts -------------------------------------------------------------------------

    def listing_ttl(self, run: Run | None) -> float:
        """Seconds a listing under *run* (or of ``runs/`` for None) is trusted."""
        ttl = self._settings.metadata_ttl
        if run is not None and run.is_finished:
            return max(ttl, self._settings.finished_run_ttl)
        return ttl

    # -- listings -------------------------------------------------------------------------

    async def children(self, node: Node) -> list[tuple[str, Node]]:
        """Return the ``(name, node)`` entries of directory *node*, sorted by inode."""
        pairs: list[tuple[str, Node]]
        if node.kind is NodeKind.ROOT:
            pairs = [(RUNS_DIR, self.runs_node())]
            pairs.extend((name, self._view_root(name)) for name in VIEW_ROOTS)
        elif node.kind in VIEW_KINDS:
            pairs = await self._view_children(node)
        elif node.kind is NodeKind.RUNS:
            names = await self._run_names()
            pairs = [(name, self._run_node(run)) for name, run in names.listed.items()]
        elif node.kind is NodeKind.RUN:
            pairs = [(category, self._category_node(node, category)) for category in CATEGORIES]
        elif node.kind in (NodeKind.CATEGORY, NodeKind.DIR):
            listing = await self._listing(node)
            entries = merge_entries(listing.entries(node.path), self._local_of(node), node.path)
            pairs = [(name, self._entry_node(node, entry)) for name, entry in entries.items()]
        else:
            raise NotADirectoryError(f"inode {node.inode} is not a directory")
        pairs.sort(key=lambda pair: pair[1].inode)
        if node.kind is NodeKind.RUNS:
            self._lookahead.listed([(name, run) for name, child in pairs if (run := child.run)])
        return pairs

    async def lookup(self, parent: Node, name: str) -> Node | None:
        """Return the node called *name* in directory *parent*, or None if there is none."""
        if parent.kind is NodeKind.ROOT:
            if name in VIEW_ROOTS:
                return self._view_root(name)
            return self.runs_node() if name == RUNS_DIR else None
        if parent.kind in VIEW_KINDS:
            return next((node for _, node in await self._view_children(parent, name)), None)
        if parent.kind is NodeKind.RUNS:
            run = (await self._run_names()).find(name)
            return None if run is None else self._run_node(run)
        if parent.kind is NodeKind.RUN:
            if name == RUN_INFO_NAME:
                await self.refresh(parent)
                return self._run_info_node(parent)
            return self._category_node(parent, name) if name in CATEGORIES else None
        if parent.kind in (NodeKind.CATEGORY, NodeKind.DIR):
            entry = await self._entry(parent, name)
            return None if entry is None else self._entry_node(parent, entry)
        raise NotADirectoryError(f"inode {parent.inode} is not a directory")

    async def _entry(self, parent: Node, name: str) -> Entry | None:
        listing = await self._listing(parent)
        return merge_entry(listing.entries(parent.path), self._local_of(parent), parent.path, name)

    async def refresh(self, node: Node) -> None:
        """Bring the run record of a run node (or of its ``.simvue-run.json``) up to date
        from the (cached) runs listing."""
        if node.kind not in (NodeKind.RUN, NodeKind.RUN_INFO) or node.run is None:
            return
        run = (await self._run_names()).by_id.get(node.run.id)
        if run is not None:
            node.run = run

    async def link_target(self, node: Node) -> str:
        """Return the target of view link *node*, from the (cached) runs listing.

        Raises LocalError (ENOENT) when its run is no longer listed.
        """
        run = node.run
        assert node.kind is NodeKind.LINK
        assert run is not None
        run_dir = (await self._current_views()).run_dirs.get(run.id)
        if run_dir is None:
            raise LocalError(f"run {run.id} is no longer listed", errno=errno.ENOENT)
        node.target = link_target(node.depth, run_dir)
        return node.target

    async def exact_size(self, node: Node) -> int:
        """Return the real content size of file *node*, asking the server once if needed.

        The server reports ``len + 33`` for object artifacts, so their size comes from
        ``client.content_length``; sizes are remembered per artifact id (immutable). Files
        written here know their size.
        """
        if node.staged is not None:
            return node.staged.size
        if node.size is not None:
            return node.size
        artifact = node.artifact
        if artifact is None:
            raise IsADirectoryError(f"inode {node.inode} is not a file")
        client = self._client
        size = await self._sizes.get_or_load(
            artifact.id, lambda: client.content_length(artifact), math.inf
        )
        node.size = size
        return size

    def known_size(self, node: Node) -> int | None:
        """Return the real size of file *node* if known without a request."""
        if node.staged is not None:
            return node.staged.size
        if node.size is None and node.artifact is not None:
            node.size = self._sizes.get_nowait(node.artifact.id)
        return node.size

    # -- writing --------------------------------------------------------------------------

    def start_writing(self, uploader: Uploader) -> None:
        """Accept writes in ``input/`` through *uploader*, and show its pending uploads."""
        self.uploader = uploader
        for pending in uploader.pending():
            f = uploader.lookup(pending.run_id, pending.category, pending.name)
            if f is not None:
                local = self._local_at(f.run_id, f.category)
                local.add_file(f.name, f)
                if f.record is not None:  # what it replaces goes once it lands
                    local.hidden.update(f.record.replaces)

    def owns(self, run: Run) -> bool:
        """True unless *run* is known to be another user's (``Run.belongs_to_another``):
        only the owner may add artifacts, so ``input/`` of other users' runs is read-only
        (mode 0555, ``create``/``mkdir``/``rename`` into it EACCES) instead of an upload the
        server refuses."""
        return not run.belongs_to_another(self.user)

    def _note_shared(self, runs: list[Run]) -> None:
        """Say once in the log why runs of other users take no files (the kernel refuses
        writes into their ``input/``, mode 0555, before this daemon sees the request)."""
        shared = [run for run in runs if not self.owns(run)]
        if shared and self.uploader is not None and not self._shared_noted:
            self._shared_noted = True
            log.info(
                "%d run(s) shown are other users' (shared with %s, e.g. %r of %s): their "
                "input/ is read-only, since only a run's owner can add artifacts",
                len(shared),
                self.user,
                shared[0].name,
                shared[0].user,
            )

    async def current_run(self, node: Node) -> Run | None:
        """Bring *node*'s run record up to date from the (cached) runs listing and return
        it; a listing that cannot be fetched leaves the record as it was."""
        run = node.run
        if run is None:
            return None
        try:
            fresh = (await self._run_names()).by_id.get(run.id)
        except SimvueError as exc:
            log.debug("keeping the record of run %s: %s", run.id, exc)
            return run
        if fresh is not None:
            node.run = fresh
        return node.run

    def follow_run_nowait(self, node: Node) -> None:
        """Bring *node*'s run record up to date from the runs listing if one is cached and
        fresh; never a request (attributes follow the run's state without waiting)."""
        names = self._runs.get_nowait(RUNS_DIR)
        fresh = None if names is None or node.run is None else names.by_id.get(node.run.id)
        if fresh is not None:
            node.run = fresh

    async def input_mode(self, node: Node) -> str:
        """How ``input/`` of *node*'s run may change now (module docstring): ``editable``,
        ``append-only`` or ``read-only``."""
        run = await self.current_run(node)
        if self.uploader is None or run is None or not self.owns(run):
            return READ_ONLY
        return EDITABLE if run.status == EDITABLE_STATUS else APPEND_ONLY

    def writable(self, node: Node) -> bool:
        """True for directories and files inside ``input/`` (itself included) of a writable
        tree: where files and directories can be made."""
        return (
            self.uploader is not None
            and node.category == WRITABLE_CATEGORY
            and node.kind in (NodeKind.CATEGORY, NodeKind.DIR, NodeKind.FILE)
        )

    async def create_file(self, parent: Node, name: str) -> Node:
        """Start the new file *name* in directory *parent*; it comes back open for writing
        once (``node.staged``).

        Raises LocalError: EROFS outside ``input/``; EINVAL for a name Simvue would refuse;
        EEXIST when the name is taken; others as ``Uploader.create``.
        """
        uploader, run = self._writing(parent)
        full = self._new_name(parent, name)
        if await self._entry(parent, name) is not None:
            raise LocalError(f"{full} exists already", errno=errno.EEXIST)
        f = await uploader.create(run.id, full, WRITABLE_CATEGORY)
        self._local_at(run.id, WRITABLE_CATEGORY).add_file(full, f)
        return self._written_node(parent, f)

    async def edit_file(self, node: Node, *, keep_content: bool) -> StagedFile:
        """Start replacing the input file *node* (an open for writing, ``truncate``): a new
        file that takes its place, open once for writing, empty or (*keep_content*) with the
        artifact's content, which the artifact's own replaces when it lands.

        Raises LocalError: EACCES when the run has started (``append-only``; unless *node* is
        a file this mount just uploaded, as for ``rm``) or the artifact is attached to another
        run too (the log says which); else as ``Uploader.edit``.
        """
        parent = self._node_parent(node)
        uploader, run = self._writing(parent)
        artifact = node.artifact
        if artifact is None:  # unlinked before it landed, reopened through /proc
            raise LocalError(f"inode {node.inode} was removed", errno=errno.EACCES)
        await self._require_change(node, errno.EACCES, "changed")
        await self._require_unshared(uploader, run, artifact, errno.EACCES)
        f = await uploader.edit(run.id, artifact.name, artifact, keep_content=keep_content)
        local = self._local_at(run.id, WRITABLE_CATEGORY)
        local.add_file(artifact.name, f)
        local.hidden.add(artifact.id)
        node.staged = f
        self._written[f.spool_id] = node
        return f

    async def _require_change(self, node: Node, code: int, what: str) -> None:
        """Raise LocalError(*code*) unless the input *node* may be *what* ("changed",
        "removed", "replaced"): in an editable run, or when it is a file this mount just
        uploaded (a tool's transient file, module docstring), whatever the run's state."""
        f = node.staged
        transient = (
            f is not None
            and self.uploader is not None
            and self.uploader.recently_landed(f)
            and f.artifact is not None
            and f.artifact.name == f.name  # created by this mount (``upload._own_artifact``)
        )
        if transient:
            return
        if await self.input_mode(node) == EDITABLE:
            return
        run = node.run
        assert run is not None
        raise LocalError(
            f"{join_path(node.path, node.artifact.name if node.artifact else '')} cannot be "
            f"{what}: run {run.name!r} is {run.status}, and a run's inputs change only while it "
            "is created (not started)",
            errno=code,
        )

    async def _require_unshared(
        self, uploader: Uploader, run: Run, artifact: Artifact, code: int
    ) -> None:
        """Raise LocalError(*code*) when *artifact* must not go from *run* (``deletes.py``)."""
        problem = await uploader.sharing_problem(run.id, artifact)
        if problem is not None:
            log.warning(
                "run %s: %s (artifact %s) is left unchanged: %s",
                run.id,
                artifact.name,
                artifact.id,
                problem,
            )
            raise LocalError(f"{artifact.name} cannot change: {problem}", errno=code)

    def _node_parent(self, node: Node) -> Node:
        parent = self.table.get(node.parent)
        assert parent is not None
        return parent

    async def make_dir(self, parent: Node, name: str) -> Node:
        """Make the local directory *name* in *parent* (shown until removed, and as the
        prefix of the names of files written into it). Raises like :meth:`create_file`."""
        _, run = self._writing(parent)
        full = self._new_name(parent, name)
        if await self._entry(parent, name) is not None:
            raise LocalError(f"{full} exists already", errno=errno.EEXIST)
        self._local_at(run.id, WRITABLE_CATEGORY).add_dir(full)
        return self._entry_node(parent, Entry(None, full))

    async def remove_dir(self, parent: Node, name: str) -> None:
        """Remove the empty directory *name*: made with :meth:`make_dir`, or emptied by
        removing (or renaming away) the inputs it held.

        Raises LocalError: EROFS outside ``input/``; ENOENT; ENOTDIR; ENOTEMPTY when the
        directory holds anything shown.
        """
        _, run = self._writing(parent)
        entry = await self._entry(parent, name)
        if entry is None:
            raise LocalError(f"no directory {name}", errno=errno.ENOENT)
        if not entry.is_dir:
            raise LocalError(f"{name} is not a directory", errno=errno.ENOTDIR)
        local = self._local_at(run.id, WRITABLE_CATEGORY)
        listing = await self._listing(parent)
        files, subdirs = local.children(entry.path)
        if files or subdirs or not server_dir_empty(listing, entry.path, local):
            raise LocalError(f"directory {entry.path} is not empty", errno=errno.ENOTEMPTY)
        local.remove_dir(entry.path)
        local.removed_dirs.add(entry.path)

    async def remove_file(self, parent: Node, name: str) -> None:
        """Unlink the file *name*: a file written here that has not landed is forgotten (an
        edit of an input, opened for writing and not closed yet, takes the input with it:
        the name goes from the server too, not only from this mount); an artifact is
        deleted from the server where the run's state allows it (module docstring). The
        directory it was in stays (empty) until ``rmdir``.

        Raises LocalError: EROFS outside ``input/``; ENOENT; EISDIR; EPERM when the run has
        started, or the artifact is attached to another run too (the log says why).
        """
        uploader, run = self._writing(parent)
        entry = await self._entry(parent, name)
        if entry is None:
            raise LocalError(f"no file {name}", errno=errno.ENOENT)
        if entry.is_dir:
            raise LocalError(f"{name} is a directory", errno=errno.EISDIR)
        local = self._local_at(run.id, WRITABLE_CATEGORY)
        f = entry.local
        if f is not None and f.state is not FileState.LANDED and not f.attached:
            node = self._written.get(f.spool_id)
            original = node.artifact if node is not None else None
            if node is not None and original is not None:  # an edit of an input: both go
                await self._require_change(node, errno.EPERM, "removed")
                await uploader.delete(run.id, f"{WRITABLE_CATEGORY}/{original.name}", original)
                local.hidden.add(original.id)
            await uploader.discard(f)
            local.remove_file(f.name)
            self._forget_removed(f, node)
        else:
            node = self._entry_node(parent, entry)
            artifact = node.artifact
            if artifact is None:  # attached, not confirmed yet
                raise LocalError(f"{name} is being uploaded; try again", errno=errno.EBUSY)
            await self._require_change(node, errno.EPERM, "removed")
            await uploader.delete(run.id, f"{WRITABLE_CATEGORY}/{artifact.name}", artifact)
            local.hidden.add(artifact.id)
            if f is not None:
                local.remove_file(f.name)
            self._forget_removed(f, node)
        if parent.path:
            local.add_dir(parent.path)

    def _forget_removed(self, f: StagedFile | None, node: Node | None) -> None:
        """Let go of a removed file: the write path's record of *f* and its *node*, which
        the table drops once the kernel forgets it (no key names it any more)."""
        if f is None and node is not None:
            f = node.staged  # a written file the server's listing shows already
        if f is not None:
            self._written.pop(f.spool_id, None)
            self._landed_at.pop(f.spool_id, None)
        if node is None:
            return
        if node.artifact is None or node.run is None or node.category is None:
            self.table.unlink(node)
        else:
            self.table.unlink(node, ("artifact", node.run.id, node.category, node.artifact.id))

    async def rename(self, node: Node, name: str, new_parent: Node, new_name: str) -> None:
        """Rename *node* (called *name*, in its parent) to *new_name* in *new_parent*.

        Files written here are renamed by the uploader (a landed one lands again under the
        new name, see ``Uploader.rename``); in an editable run, other inputs are moved too
        (their content is fetched and lands under the new name, the old artifact goes); an
        empty directory made here is renamed locally. A file that has *new_name* is replaced
        where it could be removed (``remove_file``). The old directory stays until rmdir.
        Raises LocalError: EROFS outside ``input/``; EXDEV across runs or categories and for
        artifacts this mount cannot rename (mv then copies); EEXIST when *new_name* exists
        and cannot be replaced; EISDIR for a file onto a directory; EACCES for directories
        with content; EINVAL for a name Simvue would refuse.
        """
        uploader, run = self._writing(new_parent)
        full = self._new_name(new_parent, new_name)
        if node.run is None or node.run.id != run.id or node.category != new_parent.category:
            raise LocalError("cannot move between runs or categories", errno=errno.EXDEV)
        local = self._local_at(run.id, WRITABLE_CATEGORY)
        target = await self._entry(new_parent, new_name)
        replaced: dict[str, str] = {}
        if target is not None:
            target_node = self._entry_node(new_parent, target)
            if target_node is node:
                return
            if node.kind is NodeKind.DIR or target.is_dir:
                code = errno.EISDIR if target.is_dir else errno.ENOTDIR
                raise LocalError(f"{full} exists", errno=code)
            replaced = await self._replaceable(uploader, run, target_node, full)
        if node.kind is NodeKind.DIR:
            await self._rename_dir(node, local, new_parent, full)
            return
        f = node.staged
        old_dir = self._node_parent(node).path
        live = f is not None and f.state in (FileState.STAGED, FileState.PENDING)
        written = f is not None and (live or uploader.recently_landed(f))
        if not written and (node.artifact is None or await self.input_mode(node) != EDITABLE):
            raise LocalError(
                f"{name} is an artifact this mount did not write; copy it instead",
                errno=errno.EXDEV,
            )
        if written and f is not None and f.attached:
            own = f.artifact or node.artifact  # its old name's artifact goes: never shared
            if own is not None:
                await self._require_unshared(uploader, run, own, errno.EXDEV)
        await self._drop_replaced(local, target, replaced)
        if written:
            assert f is not None
            await self._rename_written(f, local, full, replaced)
        else:
            assert node.artifact is not None
            await self._move_artifact(uploader, run, node, node.artifact, full, replaced)
        node.parent = new_parent.inode
        if old_dir:
            local.add_dir(old_dir)

    async def _replaceable(
        self, uploader: Uploader, run: Run, target: Node, full: str
    ) -> dict[str, str]:
        """What a rename onto the file *target* (called *full*) replaces: {} for a file
        written here not attached yet (it is forgotten), else {artifact id: checksum}.
        Raises LocalError(EEXIST) when *target* may not go (the run has started, or the
        artifact is attached to another run too)."""
        f = target.staged
        if f is not None and f.state is not FileState.LANDED and not f.attached:
            return {}
        artifact = target.artifact
        if artifact is None:
            raise LocalError(f"{full} is being uploaded; try again", errno=errno.EBUSY)
        await self._require_change(target, errno.EEXIST, "replaced")
        await self._require_unshared(uploader, run, artifact, errno.EEXIST)
        return {artifact.id: artifact.checksum}

    async def _drop_replaced(
        self, local: LocalFiles, target: Entry | None, replaced: dict[str, str]
    ) -> None:
        """Stop showing what a rename is about to replace: the server artifacts in
        *replaced*, and a file written here that *target* showed (forgotten if it had not
        landed: a rename over it leaves nothing of it)."""
        local.hidden.update(replaced)
        f = None if target is None else target.local
        if f is None:
            return
        if local.file(f.name) is f:
            local.remove_file(f.name)
        if f.state is not FileState.LANDED and self.uploader is not None:
            await self.uploader.discard(f)

    async def _rename_written(
        self, f: StagedFile, local: LocalFiles, full: str, replaced: dict[str, str]
    ) -> None:
        """Rename the file *f* written here (the uploader's rename)."""
        assert self.uploader is not None
        old_name = f.name
        hidden = f.artifact.id if f.state is FileState.LANDED and f.artifact else None
        local.remove_file(old_name)
        local.add_file(full, f)
        if hidden is not None:
            local.hidden.add(hidden)
        try:
            await self.uploader.rename(f, full, replaced)
        except BaseException:
            local.remove_file(full)
            local.add_file(old_name, f)
            if hidden is not None:
                local.hidden.discard(hidden)
            raise

    async def _move_artifact(
        self,
        uploader: Uploader,
        run: Run,
        node: Node,
        artifact: Artifact,
        full: str,
        replaced: dict[str, str],
    ) -> None:
        """Rename an input of an editable run: its content lands under *full* (fetched into
        the spool; the server usually has it, so no bytes are sent), replacing *replaced*
        and the artifact itself. Returns once the server has it (like a close)."""
        await self._require_unshared(uploader, run, artifact, errno.EXDEV)
        f = await uploader.edit(run.id, full, artifact, keep_content=True)
        f.replaces.update(replaced)
        local = self._local_at(run.id, WRITABLE_CATEGORY)
        local.add_file(full, f)
        local.hidden.add(artifact.id)
        node.staged = f
        self._written[f.spool_id] = node
        try:
            await uploader.commit(f)
        finally:
            await uploader.release(f, write=True)

    async def _rename_dir(self, node: Node, local: LocalFiles, new_parent: Node, full: str) -> None:
        listing = await self._listing(node)
        if node.path not in local.dirs or merge_entries(
            listing.entries(node.path), local, node.path
        ):
            raise LocalError(
                f"cannot rename directory {node.path}: only empty directories made with "
                "mkdir can be renamed",
                errno=errno.EACCES,
            )
        local.remove_dir(node.path)
        local.add_dir(full)
        node.path = full
        node.parent = new_parent.inode
        self.table.rekey(node, ("dir", node.key[1], node.key[2], full))

    def landed(self, f: StagedFile) -> None:
        """The uploader's ``on_landed``: *f* is an artifact now; its node becomes the
        artifact's (same inode).

        The cached listing is not dropped: *f* stays in the overlay until a listing of the
        server shows it or one asked after this landing comes (``overlay.py``), so no write
        is ever hidden, and writing many files does not cost a listing per file.
        """
        artifact = f.artifact
        if artifact is None:
            return
        local = self._local_at(f.run_id, f.category)
        if local.file(f.name) is None:
            local.add_file(f.name, f)  # a resumed upload that landed before it was adopted
        self._landings += 1
        local.landed(f, self._landings)
        node = self._written.get(f.spool_id)
        if node is not None:
            self._land_node(node, f, artifact)
            self._landed_at.pop(f.spool_id, None)  # a rename lands it again: to the end
            self._landed_at[f.spool_id] = trio.current_time()
        self.settle_landed()

    def settle_landed(self) -> int:
        """Let go of the write path's record of each settled file (module docstring); return
        how many. Looks at files in landing order and stops at the first one landed less
        than ``LANDED_RETENTION`` ago, so a call costs one step per file not settled yet."""
        horizon = trio.current_time() - LANDED_RETENTION
        settled = 0
        for spool_id, landed_at in list(self._landed_at.items()):
            if landed_at > horizon:
                break
            node = self._written.get(spool_id)
            f = None if node is None else node.staged
            if node is None or f is None or f.spool_id != spool_id:
                # the node shows another file now (an edit replaced this one), or none
                del self._landed_at[spool_id]
                self._written.pop(spool_id, None)
                continue
            if f.state is not FileState.LANDED:
                del self._landed_at[spool_id]  # renamed: it lands again, and comes back
                continue
            local = self._local.get((f.run_id, f.category))
            if f.fd is not None or (local is not None and local.file(f.name) is f):
                continue  # still open, or still in the overlay: look again later
            assert f.artifact is not None
            del self._landed_at[spool_id]
            del self._written[spool_id]
            node.staged = None
            self.table.rekey(node, ("artifact", f.run_id, f.category, f.artifact.id))
            # Its listing record shows it now: the node goes once the kernel forgets it,
            # which it is asked to (it would keep the entry while it has memory to spare).
            self.table.release(node)
            if self.forget_entry is not None:
                self.forget_entry(node.parent, f.name.rpartition("/")[2])
            settled += 1
        return settled

    def dropped(self, f: StagedFile) -> None:
        """The uploader's ``on_dropped``: ``simvuefs pending drop`` dropped the pending *f*;
        it is no longer shown."""
        local = self._local_at(f.run_id, f.category)
        if local.file(f.name) is f:
            local.remove_file(f.name)

    def abandoned(self, f: StagedFile) -> None:
        """*f* will never be uploaded (``Uploader.abandon``: its writer was killed): it is no
        longer shown, and an input it was to replace shows again."""
        local = self._local_at(f.run_id, f.category)
        if local.file(f.name) is f:
            local.remove_file(f.name)
        local.hidden.difference_update(f.replaces)
        node = self._written.pop(f.spool_id, None)
        if node is not None and node.artifact is not None:
            node.staged = None  # the node of the input an edit was to replace

    def _land_node(self, node: Node, f: StagedFile, artifact: Artifact) -> None:
        node.artifact = artifact
        node.size = f.size
        self.table.alias(("artifact", f.run_id, f.category, artifact.id), node.inode)

    def _writing(self, parent: Node) -> tuple[Uploader, Run]:
        """Return the uploader and run for a change in directory *parent* (EROFS if none)."""
        if self.uploader is None or not self.writable(parent) or parent.run is None:
            raise LocalError("read-only: only input/ of a run can be written", errno=errno.EROFS)
        run = parent.run
        if not self.owns(run):
            raise LocalError(
                f"run {run.name!r} ({run.id}) is {run.user}'s, shared with {self.user}: only "
                "its owner can add input files",
                errno=errno.EACCES,
            )
        if parent.kind is NodeKind.FILE:
            raise LocalError(f"inode {parent.inode} is not a directory", errno=errno.ENOTDIR)
        return self.uploader, parent.run

    def _new_name(self, parent: Node, name: str) -> str:
        """Return the artifact name of *name* in *parent*, or raise EINVAL naming the rule."""
        full = join_path(parent.path, name)
        check_artifact_name(full)
        return full

    # -- nodes ----------------------------------------------------------------------------

    def runs_node(self) -> Node:
        """Return the ``runs/`` node."""
        return self.table.ensure(("runs",), NodeKind.RUNS, ROOT_INODE)

    def _view_root(self, name: str) -> Node:
        key, kind = VIEW_ROOTS[name]
        return self.table.ensure(key, kind, ROOT_INODE)

    async def _current_views(self) -> Views:
        """The views of the current runs listing (built once per listing)."""
        names = await self._run_names()
        if self._views is None or self._views[0] is not names:
            views, problems = build_views(names.listed)
            self._warn(problems, "the views")
            self._views = (names, views)
        return self._views[1]

    async def _view_children(self, node: Node, only: str | None = None) -> list[tuple[str, Node]]:
        """The entries of a view directory (unsorted); with *only*, just the one so named."""
        views = await self._current_views()
        inode = node.inode
        if node.kind is NodeKind.BY_ID:
            return [
                (name, self._link(("view-id", run.id), inode, run, 1, views))
                for name, run in _pick(views.by_id, only)
            ]
        if node.kind is NodeKind.TAGS:
            return [(name, self._tag_dir(tag, inode)) for name, (tag, _) in _pick(views.tags, only)]
        if node.kind is NodeKind.TAG:
            tag_dir = views.tag_dirs.get(node.tag)
            links = {} if tag_dir is None else views.tags[tag_dir][1]
            return [
                (name, self._link(("tag-link", node.tag, run.id), inode, run, 2, views))
                for name, run in _pick(links, only)
            ]
        folder = views.folders.get(node.folder)
        if folder is None:
            return []
        subfolders = {name: join_path(node.folder, name) for name in folder.folders}
        pairs = [(name, self._folder_dir(path, inode)) for name, path in _pick(subfolders, only)]
        depth = folder_depth(node.folder)
        pairs.extend(
            (name, self._link(("folder-link", run.id), inode, run, depth, views))
            for name, run in _pick(folder.runs, only)
        )
        return pairs

    def _tag_dir(self, tag: str, parent: int) -> Node:
        return self.table.ensure(("tag", tag), NodeKind.TAG, parent)

    def _folder_dir(self, path: str, parent: int) -> Node:
        return self.table.ensure(("folder", path), NodeKind.FOLDER, parent)

    def _link(self, key: tuple[str, ...], parent: int, run: Run, depth: int, views: Views) -> Node:
        node = self.table.ensure(key, NodeKind.LINK, parent)
        node.parent = parent
        node.run = run
        node.depth = depth
        node.target = link_target(depth, views.run_dirs[run.id])
        return node

    def _run_node(self, run: Run) -> Node:
        node = self.table.ensure(("run", run.id), NodeKind.RUN, self.runs_node().inode)
        node.run = run
        return node

    def _run_info_node(self, run_node: Node) -> Node:
        assert run_node.run is not None
        key = ("run_info", run_node.run.id)
        node = self.table.ensure(key, NodeKind.RUN_INFO, run_node.inode)
        node.run = run_node.run
        return node

    def _category_node(self, run_node: Node, category: str) -> Node:
        assert run_node.run is not None
        key = ("category", run_node.run.id, category)
        node = self.table.ensure(key, NodeKind.CATEGORY, run_node.inode)
        node.run = run_node.run
        node.category = category
        return node

    def _entry_node(self, parent: Node, entry: Entry) -> Node:
        assert parent.run is not None
        assert parent.category is not None
        run_id = parent.run.id
        artifact = entry.artifact
        if entry.local is not None:
            return self._written_node(parent, entry.local)
        if artifact is None:
            key = ("dir", run_id, parent.category, entry.path)
            node = self.table.ensure(key, NodeKind.DIR, parent.inode)
            node.path = entry.path
        else:
            key = ("artifact", run_id, parent.category, artifact.id)
            node = self.table.ensure(key, NodeKind.FILE, parent.inode)
            node.artifact = artifact
            if node.size is None and not artifact.is_object:
                node.size = artifact.size
        node.run = parent.run
        node.category = parent.category
        return node

    def _written_node(self, parent: Node, f: StagedFile) -> Node:
        """The node of file *f* written through this mount (made on first sight)."""
        node = self._written.get(f.spool_id)
        if node is None:
            key = ("written", f.run_id, f.category, f.spool_id)
            node = self.table.ensure(key, NodeKind.FILE, parent.inode)
            node.staged = f
            self._written[f.spool_id] = node
            if f.artifact is not None:
                self._land_node(node, f, f.artifact)
                self._landed_at.setdefault(f.spool_id, trio.current_time())
        node.run = parent.run
        node.category = parent.category
        return node

    def _local_of(self, node: Node) -> LocalFiles | None:
        if node.run is None or node.category is None:
            return None
        return self._local.get((node.run.id, node.category))

    def _local_at(self, run_id: str, category: str) -> LocalFiles:
        return self._local.setdefault((run_id, category), LocalFiles())

    async def _run_names(self) -> RunNames:
        return await self._runs_refresh.get(self.listing_ttl(None))

    async def _load_run_names(self) -> RunNames:
        runs = await self._client.list_runs(self._selection.server_filters())
        shown = [run for run in runs if self._selection.matches(run, self.user)]
        self._note_shared(shown)
        names, problems = name_runs(shown)
        self._warn(problems, "runs/")
        return names

    def start_lookahead(self, nursery: trio.Nursery) -> None:
        """List runs ahead of a walk of ``runs/``, and the runs listing again before it
        expires while it is used (``lookahead.py``), in tasks of *nursery*."""
        self._lookahead.start(nursery)
        self._runs_refresh.start(nursery)

    async def _list_ahead(self, run: Run) -> None:
        """Fill the caches with the listings of every category of *run* (lookahead)."""
        for category in CATEGORIES:
            await self._category_listing(run, category)

    async def _listing(self, node: Node) -> CategoryListing:
        """The listing of *node*'s run and category; tells the lookahead the run is entered."""
        run, category = node.run, node.category
        assert run is not None
        assert category is not None
        self._lookahead.entered(run.id)
        return await self._category_listing(run, category)

    async def _category_listing(self, run: Run, category: str) -> CategoryListing:
        """The listing of *category* of *run*: from the run's one listing of all
        categories while the server's entries carry their category, else its own request."""
        ttl = self.listing_ttl(run)
        if self._listing_by_run:
            by_category = await self._run_listings.get_or_load(
                run.id, lambda: self._load_run_listing(run), ttl
            )
            self._release_replaced()
            if by_category is not None:
                return by_category[category]

        async def load() -> CategoryListing:
            landings_before = self._landings
            artifacts = await self._list_artifacts(run, category)
            return self._lay_out(run, category, artifacts, landings_before)

        listing = await self._listings.get_or_load((run.id, category), load, ttl)
        self._release_replaced()
        return listing

    def _release_replaced(self) -> None:
        """Give the heap's free pages back once a long listing replaced the one before it
        in its cache (the old records are then freed: nodes share the new ones)."""
        if self._release_due:
            self._release_due = False
            release_freed()

    async def _load_run_listing(self, run: Run) -> Mapping[str, CategoryListing] | None:
        """All categories of *run* from one unfiltered request, or None (and from now on
        one request per category) when the server's entries do not say their category."""
        landings_before = self._landings
        artifacts = await self._list_artifacts(run, None)
        if any(artifact.category not in CATEGORIES for artifact in artifacts):
            if self._listing_by_run:
                log.info("the server's run listings do not name categories: one per category")
            self._listing_by_run = False
            return None
        return {
            category: self._lay_out(
                run, category, [a for a in artifacts if a.category == category], landings_before
            )
            for category in CATEGORIES
        }

    async def _list_artifacts(self, run: Run, category: str | None) -> list[Artifact]:
        """The artifacts of *run* (in *category*), sharing the records of the last listing
        for those unchanged (``records.py``)."""
        key = (run.id, category)
        try:
            artifacts = await self._client.list_artifacts(
                run.id, category, known=self._records.known(key)
            )
        except NotFound:
            # Servers answer 404 for "no artifacts" as well as for "no such run".
            return []
        self._records.keep(key, artifacts, self.listing_ttl(run))
        self._release_due = self._release_due or len(artifacts) >= RELEASE_AFTER
        return artifacts

    def _lay_out(
        self, run: Run, category: str, artifacts: list[Artifact], landings_before: int
    ) -> CategoryListing:
        """The directories of *category* of *run* from its listed *artifacts*, with this
        mount's own writes accounted for; the listing was asked after *landings_before*
        landings (``overlay.LocalFiles.drop_listed``)."""
        local = self._local.get((run.id, category))
        if local:
            artifacts = [a for a in artifacts if a.id not in local.hidden]
            local.drop_listed((a.id for a in artifacts), landings_before)
            local.removed_dirs.clear()  # this listing leaves out what only hidden ones made
            self.settle_landed()
        for artifact in artifacts:
            # Nodes share the listing's records: a node made from an older listing (or at a
            # landing) would keep a second copy of each, for as long as the kernel holds it;
            # and its key the record's id (a file written here was keyed by the upload's).
            key = ("artifact", run.id, category, artifact.id)
            node = self.table.find(key)
            if node is not None and node.staged is None:
                node.artifact = artifact
                if node.key[-1] is not artifact.id:
                    self.table.rekey(node, key)
                if node.size == artifact.size:  # the record's number, not the upload's copy
                    node.size = artifact.size
        listing, problems = name_artifacts(artifacts)
        self._warn(problems, f"run {run.id} {category}/")
        return listing

    def _warn(self, problems: list[Problem], where: str) -> None:
        for problem in problems:
            if problem in self._warned:
                continue
            if len(self._warned) >= WARNED_MAX:
                self._warned.clear()
            self._warned.add(problem)
            log.warning("not shown in %s: %s: %s", where, problem[0], problem[1])

"""Inode numbers, the nodes they stand for, and the kernel's lookup counts.

Pure bookkeeping: no I/O, nothing async.

Invariants:

- Inode numbers come from a counter starting after :data:`ROOT_INODE` and are never reused
  within a process, so a number the kernel still holds can never name a different object.
- A node is identified by a *key* that says what it is, e.g. ``("run", run_id)`` or
  ``("artifact", run_id, category, artifact_id)``; view nodes ``("by-id",)``,
  ``("view-id", run_id)``, ``("folder", path)``, ``("folder-link", run_id)``, ``("tags",)``,
  ``("tag", tag)``, ``("tag-link", tag, run_id)``. The same key always maps to the same
  inode, so an object keeps its inode across listings (and its name may change, e.g. when
  a newer run takes over a duplicated name). Keys change only through
  :meth:`InodeTable.alias` and :meth:`InodeTable.rekey`, for what the mount writes.
- Nodes are kept for the life of the process, except removed and released ones: a node
  passed to :meth:`InodeTable.unlink` (a file removed or discarded) no longer has a key, and
  is dropped as soon as the kernel holds no reference to it (at once if it holds none), so
  removing files costs nothing for the life of the mount. A node passed to
  :meth:`InodeTable.release` (a settled file, which its directory's listing describes
  whole) is dropped the same way but keeps its key: :meth:`InodeTable.ensure` makes it
  again, with the same inode number, when the file is looked up again. The kernel holds
  none of the dropped inodes, so ``getattr`` on any inode the kernel knows always succeeds.
- A node's lookup count changes only through :meth:`InodeTable.add_lookup` (a successful
  ``lookup``, each ``readdir`` entry the kernel accepted, ``create`` & co.),
  :meth:`InodeTable.forget` and :meth:`InodeTable.forget_all`. ``.`` and ``..`` entries of
  ``readdir`` are never counted.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simvuefs.models import Artifact, Run
from simvuefs.write.staged import FileState

if TYPE_CHECKING:
    from simvuefs.write.staged import StagedFile

log = logging.getLogger(__name__)

ROOT_INODE = 1
"""The FUSE root inode (``FUSE_ROOT_ID``, equal to ``pyfuse3.ROOT_INODE``)."""

Key = tuple[str, ...]


class NodeKind(enum.Enum):
    """What a node is; decides its listing, attributes and timeouts."""

    ROOT = "root"  # the mountpoint: contains runs/ and the views by-id/, folders/, tags/
    RUNS = "runs"  # runs/: one directory per run
    RUN = "run"  # runs/<run>/: input, output, code
    CATEGORY = "category"  # runs/<run>/<category>/
    DIR = "dir"  # a directory made from the '/'-separated parts of artifact names
    FILE = "file"  # an artifact
    RUN_INFO = "run_info"  # runs/<run>/.simvue-run.json: the run's record, made here
    BY_ID = "by_id"  # by-id/: one link per run, named by its id
    FOLDER = "folder"  # folders/ and the directories of Simvue folders below it
    TAGS = "tags"  # tags/: one directory per tag
    TAG = "tag"  # tags/<tag>/: one link per run with that tag
    LINK = "link"  # a symbolic link of a view to a run directory in runs/

    @property
    def is_dir(self) -> bool:
        """True for every kind except FILE, RUN_INFO and LINK."""
        return self not in (NodeKind.FILE, NodeKind.RUN_INFO, NodeKind.LINK)


@dataclass(slots=True, eq=False)
class Node:
    """One inode.

    *parent* is the inode of the directory that contains it (the root is its own parent).
    *run* is set for RUN nodes and everything below them, *category* for CATEGORY, DIR and
    FILE nodes, *path* for DIR nodes (their path below the category directory, e.g.
    ``"plots/2024"``; ``""`` for the category directory itself), *artifact* for FILE nodes.
    *size* is the real content size of an artifact once known (object artifacts need a
    request to learn it). *staged* is set for files written through this mount, from their
    creation on (it stays once they land).

    View nodes (``views.py``): a LINK node has its *run*, its *target* (as last computed)
    and its *depth*, how many directories below the mount root it sits; FOLDER and TAG nodes
    have their :attr:`folder` and :attr:`tag` in their keys.

    One per file the kernel holds, so it keeps no field that its key already says
    (docs/reliability.md "Memory and files written").
    """

    inode: int
    key: Key
    kind: NodeKind
    parent: int
    run: Run | None = None
    category: str | None = None
    path: str = ""
    artifact: Artifact | None = None
    size: int | None = None
    staged: StagedFile | None = None
    depth: int = 0
    target: str = ""
    lookups: int = 0

    @property
    def folder(self) -> str:
        """The path of a FOLDER node below ``folders/`` (``""`` for ``folders/`` itself)."""
        return self.key[1] if self.kind is NodeKind.FOLDER else ""

    @property
    def tag(self) -> str:
        """The tag of a TAG node."""
        return self.key[1] if self.kind is NodeKind.TAG else ""

    @property
    def unfinished(self) -> StagedFile | None:
        """The file written through the mount that this node shows, while it has not landed
        (STAGED, PENDING, or DISCARDED but still open); None otherwise."""
        f = self.staged
        if f is None or f.state is FileState.LANDED:
            return None
        return f


class InodeTable:
    """Map keys to inodes and inodes to nodes; keep the kernel's lookup counts."""

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._by_key: dict[Key, int] = {}
        self._next_inode = ROOT_INODE + 1
        self._unlinked: set[int] = set()
        self._released: set[int] = set()
        root = Node(ROOT_INODE, ("root",), NodeKind.ROOT, parent=ROOT_INODE)
        self._nodes[ROOT_INODE] = root
        self._by_key[root.key] = ROOT_INODE

    @property
    def root(self) -> Node:
        """The root node (inode :data:`ROOT_INODE`)."""
        return self._nodes[ROOT_INODE]

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, inode: int) -> Node | None:
        """Return the node of *inode*, or None if this process never allocated it."""
        return self._nodes.get(inode)

    def ensure(self, key: Key, kind: NodeKind, parent: int) -> Node:
        """Return the node with *key*, allocating a fresh inode the first time.

        An existing node keeps its inode and lookup count; *kind* and *parent* are only used
        when the node is created (a key implies both). A released node dropped since is made
        again with its inode number (the caller fills in what it shows), still released.
        """
        inode = self._by_key.get(key)
        if inode is not None:
            node = self._nodes.get(inode)
            if node is not None:
                return node
            self._released.add(inode)  # made again: released again at its last forget
        else:
            inode = self._next_inode
            self._next_inode += 1
        node = Node(inode, key, kind, parent)
        self._nodes[inode] = node
        self._by_key[key] = inode
        return node

    def find(self, key: Key) -> Node | None:
        """Return the node with *key*, or None if no node has it (nothing is allocated; a
        released node dropped since is not made again)."""
        inode = self._by_key.get(key)
        return None if inode is None else self._nodes.get(inode)

    def alias(self, key: Key, inode: int) -> None:
        """Make *key* name the existing node *inode* as well (a written file keeps its inode
        once it lands as an artifact); *key* stops naming any node it named before."""
        if inode not in self._nodes:
            raise KeyError(f"no node with inode {inode}")
        self._by_key[key] = inode

    def rekey(self, node: Node, key: Key) -> None:
        """Give *node* the key *key* instead of its own (a renamed directory keeps its
        inode); its old key no longer names it."""
        if self._by_key.get(node.key) == node.inode:
            del self._by_key[node.key]
        self._by_key.pop(key, None)  # so the table keeps one copy of the key, the node's
        node.key = key
        self._by_key[key] = node.inode

    def unlink(self, node: Node, *keys: Key) -> None:
        """Let go of *node* (a file removed or discarded): its key and those of *keys* that
        name it stop naming it, and it is dropped once the kernel holds no reference to it.
        Whoever else kept *node* (the tree's records of written files) lets go of it too."""
        for key in (node.key, *keys):
            if self._by_key.get(key) == node.inode:
                del self._by_key[key]
        if node.inode == ROOT_INODE or node.inode not in self._nodes:
            return
        self._released.discard(node.inode)
        if node.lookups:
            self._unlinked.add(node.inode)
        else:
            del self._nodes[node.inode]

    def release(self, node: Node) -> None:
        """Let go of *node* (a settled file: what it shows is in its directory's listing)
        once the kernel holds no reference to it (at once if it holds none); its key keeps
        naming its inode number, for :meth:`ensure` to make it again."""
        if self._nodes.get(node.inode) is not node or node.inode == ROOT_INODE:
            return
        if node.lookups:
            self._released.add(node.inode)
        else:
            del self._nodes[node.inode]

    def add_lookup(self, inode: int, count: int = 1) -> None:
        """Record that the kernel now holds *count* more references to *inode*."""
        self._nodes[inode].lookups += count

    def forget(self, inode: int, count: int) -> None:
        """Drop *count* kernel references to *inode*; never raises (called from ``forget``)."""
        node = self._nodes.get(inode)
        if node is None:
            log.error("forget of unknown inode %d (count %d)", inode, count)
            return
        if count > node.lookups:
            log.error(
                "forget of inode %d by %d but its lookup count is %d", inode, count, node.lookups
            )
            count = node.lookups
        node.lookups -= count
        if node.lookups:
            return
        if inode in self._unlinked:
            self._unlinked.discard(inode)
            del self._nodes[inode]
        elif inode in self._released:
            self._released.discard(inode)
            if node.staged is None:  # not written to again since
                del self._nodes[inode]
                log.debug("inode %d forgotten: its node is dropped (released)", inode)

    def forget_all(self) -> int:
        """Drop every remaining kernel reference (at unmount); return how many there were."""
        remaining = 0
        for node in self._nodes.values():
            remaining += node.lookups
            node.lookups = 0
        for inode in self._unlinked:
            del self._nodes[inode]
        self._unlinked.clear()
        self._released.clear()
        return remaining

    def held(self) -> dict[int, int]:
        """Return ``{inode: lookup count}`` for every inode the kernel holds (for tests/stats)."""
        return {inode: node.lookups for inode, node in self._nodes.items() if node.lookups}

"""InodeTable: stable keys, never-reused numbers, exact lookup counts; Node's derived state."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from simvuefs.fuse.inodes import ROOT_INODE, InodeTable, NodeKind
from simvuefs.write.staged import FileState


def test_root_exists_and_is_its_own_parent():
    table = InodeTable()
    assert table.root.inode == ROOT_INODE
    assert table.root.parent == ROOT_INODE
    assert table.root.kind is NodeKind.ROOT
    assert table.get(ROOT_INODE) is table.root
    assert len(table) == 1


def test_same_key_same_inode_and_node():
    table = InodeTable()
    first = table.ensure(("run", "r1"), NodeKind.RUN, ROOT_INODE)
    again = table.ensure(("run", "r1"), NodeKind.RUN, ROOT_INODE)
    assert again is first
    assert table.get(first.inode) is first


def test_inodes_are_allocated_in_order_and_never_reused():
    table = InodeTable()
    inodes = [table.ensure(("run", f"r{i}"), NodeKind.RUN, ROOT_INODE).inode for i in range(50)]
    assert inodes == list(range(ROOT_INODE + 1, ROOT_INODE + 51))
    # Dropping every reference does not free a number: a new key gets a new inode.
    for inode in inodes:
        table.add_lookup(inode)
        table.forget(inode, 1)
    assert table.forget_all() == 0
    fresh = table.ensure(("run", "new"), NodeKind.RUN, ROOT_INODE)
    assert fresh.inode == inodes[-1] + 1
    # ... and an old key still maps to its old inode.
    assert table.ensure(("run", "r7"), NodeKind.RUN, ROOT_INODE).inode == inodes[7]


def test_a_released_node_goes_when_forgotten_and_comes_back_with_its_inode():
    table = InodeTable()
    key = ("artifact", "r", "input", "a")
    held = table.ensure(key, NodeKind.FILE, ROOT_INODE)
    table.add_lookup(held.inode, 2)
    table.release(held)
    assert table.get(held.inode) is held  # the kernel still holds it
    table.forget(held.inode, 1)
    assert table.find(key) is held
    table.forget(held.inode, 1)
    assert table.get(held.inode) is None
    assert table.find(key) is None  # find makes nothing
    again = table.ensure(key, NodeKind.FILE, ROOT_INODE)
    assert again is not held
    assert again.inode == held.inode
    assert again.lookups == 0
    # Made again, it is still released: dropped when the kernel forgets it again.
    table.add_lookup(again.inode)
    table.forget(again.inode, 1)
    assert table.get(again.inode) is None
    again = table.ensure(key, NodeKind.FILE, ROOT_INODE)
    # Not held: dropped at once. Written to again before the kernel forgot it: kept.
    table.release(again)
    assert table.get(again.inode) is None
    busy = table.ensure(("artifact", "r", "input", "b"), NodeKind.FILE, ROOT_INODE)
    table.add_lookup(busy.inode)
    table.release(busy)
    busy.staged = SimpleNamespace(state=FileState.STAGED)  # type: ignore[assignment]
    table.forget(busy.inode, 1)
    assert table.get(busy.inode) is busy
    # The inode numbers of released keys are never handed out again.
    assert table.ensure(("run", "new"), NodeKind.RUN, ROOT_INODE).inode == busy.inode + 1


def test_unknown_inode():
    table = InodeTable()
    assert table.get(999) is None


def test_lookup_counts_add_and_forget():
    table = InodeTable()
    node = table.ensure(("artifact", "r", "input", "a"), NodeKind.FILE, ROOT_INODE)
    table.add_lookup(node.inode)
    table.add_lookup(node.inode, 3)
    assert node.lookups == 4
    assert table.held() == {node.inode: 4}
    table.forget(node.inode, 3)
    assert node.lookups == 1
    table.forget(node.inode, 1)
    assert node.lookups == 0
    assert table.held() == {}


def test_forget_all_returns_what_was_held():
    table = InodeTable()
    a = table.ensure(("run", "a"), NodeKind.RUN, ROOT_INODE)
    b = table.ensure(("run", "b"), NodeKind.RUN, ROOT_INODE)
    table.add_lookup(a.inode, 2)
    table.add_lookup(b.inode, 5)
    assert table.forget_all() == 7
    assert a.lookups == b.lookups == 0
    # Nodes survive: the inode still resolves after unmount bookkeeping.
    assert table.get(a.inode) is a


def test_forget_never_raises_on_bad_input(caplog):
    table = InodeTable()
    node = table.ensure(("run", "a"), NodeKind.RUN, ROOT_INODE)
    table.add_lookup(node.inode)
    with caplog.at_level(logging.ERROR, logger="simvuefs.fuse.inodes"):
        table.forget(12345, 1)
        table.forget(node.inode, 5)
    assert node.lookups == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("unknown inode 12345" in m for m in messages)
    assert any("lookup count is 1" in m for m in messages)


@pytest.mark.parametrize("kind", list(NodeKind))
def test_only_files_and_links_are_not_directories(kind):
    assert kind.is_dir is (kind not in (NodeKind.FILE, NodeKind.RUN_INFO, NodeKind.LINK))


@pytest.mark.parametrize("state", list(FileState))
def test_a_written_file_is_unfinished_until_it_lands(state):
    node = InodeTable().ensure(("written", "r", "input", "s1"), NodeKind.FILE, ROOT_INODE)
    assert node.unfinished is None
    node.staged = SimpleNamespace(state=state)
    assert node.unfinished is (None if state is FileState.LANDED else node.staged)

"""Tree: directory contents and cached listings.

The Tree runs against a small counting fake client so that request counts and TTL expiry
(trio's MockClock) can be asserted exactly. The real client and devserver are exercised by
test_fs.py; the naming rules by tests/unit/test_names.py.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import trio
from helpers import settings_for
from record_util import art, run

from simvuefs.errors import NotFound
from simvuefs.fuse.inodes import NodeKind
from simvuefs.fuse.tree import Tree
from simvuefs.models import Artifact, Run

# -- Tree over a counting fake client -------------------------------------------------------


class FakeClient:
    """Canned runs/artifacts; counts every call."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.artifacts: dict[tuple[str, str], list[Artifact]] = {}
        self.sizes: dict[str, int] = {}
        self.calls: list[tuple[str, ...]] = []
        self.categorised = True

    async def list_runs(self, filters=()):
        self.calls.append(("list_runs",))
        await trio.lowlevel.checkpoint()
        return list(self.runs)

    async def list_artifacts(self, run_id, category=None, name=None, known=None):
        """Like the devserver: unfiltered listings name each entry's category, unless
        *categorised* is False (the protocol does not promise it)."""
        self.calls.append(("list_artifacts", run_id, category))
        await trio.lowlevel.checkpoint()
        if category is None:
            listed = [
                (a.replace(category=c) if self.categorised else a)
                for (r, c), artifacts in self.artifacts.items()
                if r == run_id
                for a in artifacts
            ]
            if not listed:
                raise NotFound("no such run", status=404)
            return listed
        if (run_id, category) not in self.artifacts:
            raise NotFound("no such run", status=404)
        return list(self.artifacts[(run_id, category)])

    async def content_length(self, artifact):
        self.calls.append(("content_length", artifact.id))
        await trio.sleep(0.01)
        return self.sizes[artifact.id]

    def count(self, what):
        return sum(1 for call in self.calls if call[0] == what)


SETTINGS = settings_for(metadata_ttl=1.0, finished_run_ttl=60)


@pytest.fixture
def fake():
    client = FakeClient()
    client.runs = [run("r1", "sim", 1), run("r2", "sim", 2), run("done", "fin", 0, "completed")]
    client.artifacts[("r2", "output")] = [
        art("a1", "plots/loss.png"),
        art("a2", "metrics.csv"),
        art("obj", "model", size=133, original_path=""),
    ]
    client.artifacts[("r2", "input")] = []
    client.sizes["obj"] = 100
    return client


async def names_of(tree, node):
    return [name for name, _ in await tree.children(node)]


async def test_root_and_runs(fake):
    tree = Tree(fake, SETTINGS)
    (name, runs_node), *views = await tree.children(tree.table.root)
    assert [name] + [view for view, _ in views] == ["runs", "by-id", "folders", "tags"]
    assert runs_node.kind is NodeKind.RUNS
    assert await tree.lookup(tree.table.root, "runs") is runs_node
    assert await tree.lookup(tree.table.root, "other") is None
    assert sorted(await names_of(tree, runs_node)) == ["fin", "sim", "sim@r1"]


async def test_children_sorted_by_inode(fake):
    tree = Tree(fake, SETTINGS)
    runs_node = tree.runs_node()
    children = await tree.children(runs_node)
    inodes = [node.inode for _, node in children]
    assert inodes == sorted(inodes)


async def test_runs_listing_cached_for_the_ttl(fake, autojump_clock):
    tree = Tree(fake, SETTINGS)
    runs_node = tree.runs_node()
    await tree.children(runs_node)
    for name in ("sim", "sim@r1", "sim@r2", "fin", "missing"):
        await tree.lookup(runs_node, name)
    assert fake.count("list_runs") == 1
    await trio.sleep(1.5)
    await tree.lookup(runs_node, "sim")
    assert fake.count("list_runs") == 2


async def test_run_keeps_its_inode_when_a_newer_duplicate_appears(fake, autojump_clock):
    tree = Tree(fake, SETTINGS)
    runs_node = tree.runs_node()
    before = await tree.lookup(runs_node, "sim")
    assert before.run.id == "r2"
    fake.runs.append(run("r9", "sim", 9))
    await trio.sleep(2)
    now_plain = await tree.lookup(runs_node, "sim")
    assert now_plain.run.id == "r9"
    assert now_plain is not before
    assert await tree.lookup(runs_node, "sim@r2") is before


async def test_view_nodes_know_their_folder_tag_and_depth(fake):
    fake.runs.append(dataclasses.replace(run("t1", "tagged"), folder="/demo/cfd", tags=("a/b",)))
    tree = Tree(fake, SETTINGS)
    root = tree.table.root
    demo = await tree.lookup(await tree.lookup(root, "folders"), "demo")
    cfd = await tree.lookup(demo, "cfd")
    assert (demo.kind, demo.folder, cfd.folder) == (NodeKind.FOLDER, "demo", "demo/cfd")
    link = await tree.lookup(cfd, "tagged")
    assert (link.kind, link.depth) == (NodeKind.LINK, 3)
    assert await tree.link_target(link) == "../../../runs/tagged"
    tag = await tree.lookup(await tree.lookup(root, "tags"), "a\u2215b")
    assert (tag.kind, tag.tag) == (NodeKind.TAG, "a/b")
    tag_link = await tree.lookup(tag, "tagged")
    assert (tag_link.depth, await tree.link_target(tag_link)) == (2, "../../runs/tagged")
    by_id = await tree.lookup(await tree.lookup(root, "by-id"), "t1")
    assert (by_id.depth, await tree.link_target(by_id)) == (1, "../runs/tagged")


async def test_run_directory_has_three_categories(fake):
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "sim")
    assert sorted(await names_of(tree, run_node)) == ["code", "input", "output"]
    category = await tree.lookup(run_node, "code")
    assert category.kind is NodeKind.CATEGORY
    assert category.category == "code"
    assert await tree.lookup(run_node, "plots") is None


async def test_category_listing_costs_one_request_for_all_levels(fake):
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "sim")
    output = await tree.lookup(run_node, "output")
    assert sorted(await names_of(tree, output)) == ["metrics.csv", "model", "plots"]
    plots = await tree.lookup(output, "plots")
    assert plots.kind is NodeKind.DIR
    assert plots.path == "plots"
    assert await names_of(tree, plots) == ["loss.png"]
    png = await tree.lookup(plots, "loss.png")
    assert png.kind is NodeKind.FILE
    assert png.parent == plots.inode
    assert png.artifact.id == "a1"
    assert png.size == 10
    assert fake.count("list_artifacts") == 1


async def test_missing_or_empty_category_is_an_empty_directory(fake):
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "sim")
    assert await names_of(tree, await tree.lookup(run_node, "input")) == []
    assert await names_of(tree, await tree.lookup(run_node, "code")) == []  # 404


async def test_finished_runs_use_the_longer_ttl(fake, autojump_clock):
    fake.artifacts[("done", "output")] = [art("x", "x")]
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "fin")
    assert tree.listing_ttl(run_node.run) == 60
    assert tree.listing_ttl(None) == 1
    output = await tree.lookup(run_node, "output")
    await tree.children(output)
    await trio.sleep(30)
    await tree.children(output)
    assert fake.count("list_artifacts") == 1
    await trio.sleep(31)
    await tree.children(output)
    assert fake.count("list_artifacts") == 2


async def test_indefinite_ttl_applies_to_finished_runs_too():
    settings = settings_for(metadata_ttl=math.inf)
    tree = Tree(FakeClient(), settings)
    assert tree.listing_ttl(run("d", "d", 0, "completed")) == math.inf


async def test_exact_size_asks_once_for_object_artifacts_only(fake):
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "sim")
    output = await tree.lookup(run_node, "output")
    obj = await tree.lookup(output, "model")
    csv = await tree.lookup(output, "metrics.csv")
    assert obj.size is None
    assert tree.known_size(obj) is None
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(tree.exact_size, obj)
    assert await tree.exact_size(obj) == 100
    assert await tree.exact_size(csv) == 10
    assert fake.count("content_length") == 1


async def test_artifact_keeps_inode_across_listings(fake, autojump_clock):
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "sim")
    output = await tree.lookup(run_node, "output")
    first = {name: node.inode for name, node in await tree.children(output)}
    fake.artifacts[("r2", "output")].append(art("a3", "new.txt"))
    await trio.sleep(2)
    second = {name: node.inode for name, node in await tree.children(output)}
    assert fake.count("list_artifacts") == 2
    assert {k: second[k] for k in first} == first
    assert second["new.txt"] > max(first.values())


async def test_refresh_updates_run_records(fake, autojump_clock):
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "sim")
    assert run_node.run.status == "running"
    fake.runs[1] = run("r2", "sim", 2, "completed")
    await trio.sleep(2)
    await tree.refresh(run_node)
    assert run_node.run.status == "completed"


async def test_unshowable_names_warned_once(fake, caplog, autojump_clock):
    fake.artifacts[("r2", "code")] = [art("dot", ".."), art("ok", "ok.py")]
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "sim")
    code = await tree.lookup(run_node, "code")
    for _ in range(3):
        assert await names_of(tree, code) == ["ok.py"]
        await trio.sleep(2)
    assert fake.count("list_artifacts") == 3
    warnings = [r for r in caplog.records if "not shown" in r.getMessage()]
    assert len(warnings) == 1
    assert "artifact dot" in warnings[0].getMessage()


async def test_all_categories_of_a_run_cost_one_request(fake):
    fake.artifacts[("r2", "code")] = [art("c1", "run.py")]
    tree = Tree(fake, SETTINGS)
    run_node = await tree.lookup(tree.runs_node(), "sim")
    listed = {}
    for category in ("input", "output", "code"):
        listed[category] = sorted(await names_of(tree, await tree.lookup(run_node, category)))
    assert listed == {"input": [], "output": ["metrics.csv", "model", "plots"], "code": ["run.py"]}
    assert [call for call in fake.calls if call[0] == "list_artifacts"] == [
        ("list_artifacts", "r2", None)
    ]


async def test_server_without_categories_in_listings_gets_one_request_per_category(fake):
    fake.categorised = False
    fake.artifacts[("r1", "input")] = [art("i1", "in.txt")]
    tree = Tree(fake, SETTINGS)
    sim2 = await tree.lookup(tree.runs_node(), "sim")
    output = await tree.lookup(sim2, "output")
    assert sorted(await names_of(tree, output)) == ["metrics.csv", "model", "plots"]
    assert await names_of(tree, await tree.lookup(sim2, "input")) == []
    sim1 = await tree.lookup(tree.runs_node(), "sim@r1")
    assert await names_of(tree, await tree.lookup(sim1, "input")) == ["in.txt"]
    # One unfiltered try, then filtered listings only, one per category asked for.
    assert [call[1:] for call in fake.calls if call[0] == "list_artifacts"] == [
        ("r2", None),
        ("r2", "output"),
        ("r2", "input"),
        ("r1", "input"),
    ]

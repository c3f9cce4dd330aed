"""Tree: name mapping (hostile names, duplicates, nesting, clashes) and cached listings.

The name rules are pure functions tested directly (plus a hypothesis property); the Tree
itself runs against a small counting fake client so that request counts and TTL expiry
(trio's MockClock) can be asserted exactly. The real client and devserver are exercised by
test_fs.py.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from simvuefs.config import Settings
from simvuefs.errors import NotFound
from simvuefs.fuse.inodes import NodeKind
from simvuefs.fuse.tree import (
    MAX_NAME_BYTES,
    RUN_SLASH,
    Tree,
    name_artifacts,
    name_problem,
    name_runs,
    run_base_name,
)
from simvuefs.models import Artifact, Run

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def run(run_id: str, name: str, minutes: int | None = 0, status: str = "running") -> Run:
    created = None if minutes is None else T0 + timedelta(minutes=minutes)
    return Run(id=run_id, name=name, created=created, status=status)


def art(
    artifact_id: str, name: str, minutes: int = 0, size: int = 10, original_path: str = "/x"
) -> Artifact:
    return Artifact(
        id=artifact_id,
        name=name,
        size=size,
        original_path=original_path,
        created=T0 + timedelta(minutes=minutes),
    )


# -- run names --------------------------------------------------------------------------


def test_run_slash_maps_to_division_slash_reversibly():
    assert run_base_name("exp/1/final") == f"exp{RUN_SLASH}1{RUN_SLASH}final"
    assert run_base_name("exp/1/final").replace(RUN_SLASH, "/") == "exp/1/final"
    assert run_base_name("with space: and.dots") == "with space: and.dots"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("a\tb", "a\ufffdb"), ("a\nb", "a\ufffdb"), ("nul\x00", "nul\ufffd"), ("x\ud800", "x\ufffd")],
)
def test_control_characters_and_surrogates_are_replaced(raw, shown):
    assert run_base_name(raw) == shown
    shown.encode("utf-8")  # always encodable


def test_duplicate_run_names_newest_gets_plain_name():
    runs = [run("r1", "sim", 1), run("r3", "sim", 3), run("r2", "sim", 2), run("o", "other")]
    names, problems = name_runs(runs)
    assert problems == []
    assert {name: r.id for name, r in names.listed.items()} == {
        "sim": "r3",
        "sim@r1": "r1",
        "sim@r2": "r2",
        "other": "o",
    }


def test_duplicate_ties_broken_by_id_and_missing_created_is_oldest():
    runs = [run("b", "x", 5), run("a", "x", 5), run("c", "x", None)]
    names, _ = name_runs(runs)
    assert names.listed["x"].id == "b"
    assert set(names.listed) == {"x", "x@a", "x@c"}


def test_naming_does_not_depend_on_listing_order():
    runs = [run(f"r{i}", "same", i % 3) for i in range(7)] + [run("z", "solo")]
    first, _ = name_runs(runs)
    second, _ = name_runs(list(reversed(runs)))
    assert {k: v.id for k, v in first.listed.items()} == {k: v.id for k, v in second.listed.items()}


def test_every_run_reachable_by_alias_but_alias_needs_the_right_name():
    runs = [run("r1", "a/b", 1), run("r2", "a/b", 2)]
    names, _ = name_runs(runs)
    shown = f"a{RUN_SLASH}b"
    assert names.find(shown).id == "r2"
    assert names.find(f"{shown}@r2").id == "r2"  # not listed, still found
    assert f"{shown}@r2" not in names.listed
    assert names.find(f"{shown}@r1").id == "r1"
    assert names.find("other@r1") is None
    assert names.find(f"{shown}@nope") is None
    assert names.find("missing") is None


def test_unshowable_run_names_fall_back_to_alias_or_are_reported():
    long_name = "n" * (MAX_NAME_BYTES + 1)
    runs = [run("d1", "."), run("d2", ".."), run("e", ""), run("l", long_name)]
    names, problems = name_runs(runs)
    assert names.listed[".@d1"].id == "d1"
    assert names.listed["..@d2"].id == "d2"
    assert names.listed["@e"].id == "e"
    assert [p[0] for p in problems] == [f"run l ({long_name!r})"]
    assert "255 bytes" in problems[0][1]


# -- artifact names -----------------------------------------------------------------------


def shown(listing, path=""):
    return {
        name: (entry.artifact.id if entry.artifact else f"dir:{entry.path}")
        for name, entry in listing.entries(path).items()
    }


def test_nested_directories_from_slashes():
    listing, problems = name_artifacts(
        [art("1", "a/b/c.txt"), art("2", "a/d.txt"), art("3", "e.txt"), art("4", "a/b/f")]
    )
    assert problems == []
    assert shown(listing) == {"a": "dir:a", "e.txt": "3"}
    assert shown(listing, "a") == {"b": "dir:a/b", "d.txt": "2"}
    assert shown(listing, "a/b") == {"c.txt": "1", "f": "4"}
    assert shown(listing, "nope") == {}


def test_empty_segments_are_dropped():
    listing, problems = name_artifacts([art("1", "x//y"), art("2", "/abs/z"), art("3", "t/")])
    assert problems == []
    assert shown(listing) == {"x": "dir:x", "abs": "dir:abs", "t": "3"}
    assert shown(listing, "x") == {"y": "1"}
    assert shown(listing, "abs") == {"z": "2"}


@pytest.mark.parametrize("name", ["", "/", "//", ".", "..", "a/../b", "./a", "a/."])
def test_unusable_artifact_names_are_skipped_and_reported(name):
    listing, problems = name_artifacts([art("bad", name), art("ok", "fine")])
    assert shown(listing) == {"fine": "ok"}
    assert len(problems) == 1
    assert problems[0][0].startswith("artifact bad")


def test_long_names_counted_in_utf8_bytes():
    ok = "é" * 127  # 254 bytes
    too_long = "é" * 128  # 256 bytes
    listing, problems = name_artifacts([art("1", ok), art("2", too_long), art("3", f"d/{ok}")])
    assert set(shown(listing)) == {ok, "d"}
    assert [p[0].split()[1] for p in problems] == ["2"]


def test_control_characters_in_artifact_names_are_replaced():
    listing, _ = name_artifacts([art("1", "line\nbreak/tab\there")])
    assert shown(listing) == {"line\ufffdbreak": "dir:line\ufffdbreak"}
    assert shown(listing, "line\ufffdbreak") == {"tab\ufffdhere": "1"}


def test_duplicate_artifact_names_newest_plain_others_alias():
    listing, problems = name_artifacts(
        [art("old", "out.csv", 1), art("new", "out.csv", 9), art("mid", "out.csv", 5)]
    )
    assert problems == []
    assert shown(listing) == {"out.csv": "new", "out.csv@old": "old", "out.csv@mid": "mid"}


def test_file_directory_clash_directory_keeps_the_name():
    listing, problems = name_artifacts([art("f", "a"), art("g", "a/b")])
    assert problems == []
    assert shown(listing) == {"a": "dir:a", "a@f": "f"}
    assert shown(listing, "a") == {"b": "g"}


def test_alias_clashing_with_a_real_name_is_skipped():
    listing, problems = name_artifacts([art("x", "n", 1), art("y", "n", 2), art("z", "n@x", 0)])
    assert shown(listing) == {"n": "y", "n@x": "z"}
    assert problems == [("artifact x ('n')", "name already taken")]


def test_repeated_artifact_ids_are_shown_once():
    listing, problems = name_artifacts([art("1", "a"), art("1", "a")])
    assert problems == []
    assert shown(listing) == {"a": "1"}


names_strategy = st.lists(
    st.tuples(
        st.text(alphabet=st.sampled_from("ab./\x00\n é@"), max_size=12),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=12,
)


@given(names_strategy)
def test_any_artifact_names_give_valid_unique_entries(items):
    artifacts = [art(f"id{i}", name, minutes) for i, (name, minutes) in enumerate(items)]
    listing, problems = name_artifacts(artifacts)
    shown_ids = []
    for path, entries in listing.dirs.items():
        for name, entry in entries.items():
            assert name_problem(name) is None
            if entry.artifact is None:
                assert entry.path in listing.dirs
            else:
                assert entry.path == path
                shown_ids.append(entry.artifact.id)
    skipped = {p[0].split()[1] for p in problems}
    assert len(shown_ids) == len(set(shown_ids))
    assert set(shown_ids) | skipped == {a.id for a in artifacts}
    assert not set(shown_ids) & skipped


# -- Tree over a counting fake client -------------------------------------------------------


class FakeClient:
    """Canned runs/artifacts; counts every call."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.artifacts: dict[tuple[str, str], list[Artifact]] = {}
        self.sizes: dict[str, int] = {}
        self.calls: list[tuple[str, ...]] = []
        self.categorised = True

    async def list_runs(self):
        self.calls.append(("list_runs",))
        await trio.lowlevel.checkpoint()
        return list(self.runs)

    async def list_artifacts(self, run_id, category=None, name=None):
        """Like the devserver: unfiltered listings name each entry's category, unless
        *categorised* is False (the protocol does not promise it)."""
        self.calls.append(("list_artifacts", run_id, category))
        await trio.lowlevel.checkpoint()
        if category is None:
            listed = [
                (dataclasses.replace(a, category=c) if self.categorised else a)
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


SETTINGS = Settings(url="http://127.0.0.1:1/api", token="t", metadata_ttl=1.0, finished_run_ttl=60)


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
    assert plots.prefix == "plots"
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
    settings = Settings(url="http://h/api", token="t", metadata_ttl=math.inf)
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

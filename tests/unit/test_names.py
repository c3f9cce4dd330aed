"""The naming rules (``simvuefs.fuse.names``) and the views' layout: hostile names,
duplicates, nesting, clashes. Pure functions, tested directly (plus a hypothesis property)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from record_util import art, run

from simvuefs.fuse.names import (
    MAX_NAME_BYTES,
    RUN_SLASH,
    alias_name,
    join_path,
    name_artifacts,
    name_problem,
    name_runs,
    run_base_name,
    split_alias,
)
from simvuefs.fuse.views import build_views, folder_depth, link_target
from simvuefs.models import Run


def test_aliases_split_at_the_last_separator():
    assert alias_name("a@b", "id1") == "a@b@id1"
    assert split_alias("a@b@id1") == ("a@b", "id1")
    assert split_alias("plain") is None
    assert join_path("", "x") == "x"
    assert join_path("a/b", "x") == "a/b/x"


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


# -- the views' layout --------------------------------------------------------------------


def test_a_subfolder_keeps_its_name_over_a_run_and_clashing_tags_keep_the_first() -> None:
    runs = {
        "cfd": Run(id="r1", name="cfd", folder="/demo", tags=("a/b",)),
        "mesh": Run(id="r2", name="mesh", folder="/demo/cfd", tags=("a\u2215b", "..")),
    }
    views, problems = build_views(runs)
    assert views.folders["demo"].folders == {"cfd"}
    assert views.folders["demo"].runs == {}  # run "cfd" lost its link to the folder cfd/
    assert views.folders["demo/cfd"].runs == {"mesh": runs["mesh"]}
    assert views.tags == {"a\u2215b": ("a/b", {"cfd": runs["cfd"]})}
    assert sorted(what for what, _ in problems) == [
        "run r1 ('cfd') in folders/",
        "tag '..'",
        "tag 'a∕b'",
    ]
    assert link_target(folder_depth("demo/cfd"), "mesh") == "../../../runs/mesh"
    assert link_target(folder_depth(""), "x") == "../runs/x"

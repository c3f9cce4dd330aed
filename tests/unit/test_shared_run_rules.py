"""Whose runs, without a server: the owner in a run record, which runs ``--own-runs-only``
keeps and asks the server for, and the mode of ``input/`` in runs of other users."""

from __future__ import annotations

import stat

import pytest

from simvuefs.cli import build_parser
from simvuefs.control.mounthelper import option_flags
from simvuefs.fuse.attrs import AttrPolicy, entry_attributes
from simvuefs.fuse.inodes import Node, NodeKind
from simvuefs.fuse.tree import RunSelection
from simvuefs.models import Run

ME = "alice"
MINE = Run.from_json({"id": "r1", "name": "mine", "user": ME, "folder": "/demo"})
THEIRS = Run.from_json({"id": "r2", "name": "theirs", "user": "bob", "folder": "/demo"})
ANONYMOUS = Run.from_json({"id": "r3", "name": "no owner", "folder": "/demo"})


def test_the_owner_comes_from_the_record():
    assert (MINE.user, THEIRS.user, ANONYMOUS.user) == (ME, "bob", "")
    assert Run.from_json({"id": "r", "name": "n", "user": {"name": "x"}}).user == ""


@pytest.mark.parametrize(
    ("run", "user", "other"),
    [
        (MINE, ME, False),
        (THEIRS, ME, True),
        (ANONYMOUS, ME, False),  # the record does not say: the server decides
        (THEIRS, None, False),  # who we are is unknown: the server decides
        (THEIRS, "", False),
    ],
)
def test_a_run_belongs_to_another_only_when_both_names_are_known(run, user, other):
    assert run.belongs_to_another(user) is other


def test_own_only_asks_the_server_for_its_own_runs_and_checks_them():
    own = RunSelection(own_only=True)
    assert own.server_filters() == ("user == self",)
    assert RunSelection(folder="/demo", own_only=True).server_filters() == (
        "folder.path contains /demo",
        "user == self",
    )
    assert RunSelection().server_filters() == ()
    assert own.matches(MINE, ME)
    assert own.matches(ANONYMOUS, ME)
    assert not own.matches(THEIRS, ME)
    assert own.matches(THEIRS, None)  # unknown user: the server's filter decided
    assert RunSelection().matches(THEIRS, ME)  # the default shows shared runs


def _input_dir(run: Run) -> Node:
    return Node(7, ("category", run.id, "input"), NodeKind.CATEGORY, 6, run=run, category="input")


@pytest.mark.parametrize(
    ("run", "writable", "user", "mode"),
    [
        (MINE, True, ME, 0o755),
        (THEIRS, True, ME, 0o555),
        (THEIRS, True, None, 0o755),
        (ANONYMOUS, True, ME, 0o755),
        (MINE, False, ME, 0o555),
    ],
)
def test_input_of_another_users_run_is_not_writable(run, writable, user, mode):
    policy = AttrPolicy(
        uid=1, gid=1, mount_time_ns=0, block_size=4096, writable=writable, user=user
    )
    attr = entry_attributes(_input_dir(run), policy, 1.0)
    assert stat.S_ISDIR(attr.st_mode)
    assert stat.S_IMODE(attr.st_mode) == mode


def test_the_option_reaches_the_daemon_and_fstab():
    args = build_parser().parse_args(["mount", "/mnt", "--own-runs-only"])
    assert args.own_runs_only
    assert option_flags("ro,own_runs_only") == ["--read-only", "--own-runs-only"]

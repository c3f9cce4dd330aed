"""RunSelection (``--folder``, ``--run``): which runs a mount shows, decided without a server."""

from __future__ import annotations

import pytest

from simvuefs.fuse.tree import RunSelection
from simvuefs.models import Run


@pytest.mark.parametrize(
    ("folder", "runs", "run", "shown"),
    [
        ("/demo", (), Run("1", "a", folder="/demo"), True),
        ("/demo", (), Run("1", "a", folder="/demo/cfd/x"), True),
        ("/demo", (), Run("1", "a", folder="/demonstration"), False),
        ("/demo/", (), Run("1", "a", folder="/demo"), True),
        ("/", (), Run("1", "a", folder="/anything"), True),
        (None, ("a",), Run("1", "a"), True),
        (None, ("1",), Run("1", "a"), True),
        (None, ("b",), Run("1", "a"), False),
        ("/x", ("a",), Run("1", "a", folder="/y"), False),
        (None, (), Run("1", "a"), True),
    ],
)
def test_selection_rules(folder, runs, run, shown):
    assert RunSelection(folder=folder, runs=frozenset(runs)).matches(run) is shown


@pytest.mark.parametrize(
    ("folder", "filters"),
    [
        ("/demo", ("folder.path contains /demo",)),
        ("/demo/cfd/", ("folder.path contains /demo/cfd",)),
        ("/", ()),
        (None, ()),
    ],
)
def test_server_filters_let_through_every_run_shown(folder, filters):
    selection = RunSelection(folder=folder, runs=frozenset({"a"}))
    assert selection.server_filters() == filters
    for path in ("/demo", "/demo/cfd", "/demo/cfd/x", "/demonstration", "/x/demo", "/"):
        if selection.matches(Run("1", "a", folder=path)):  # the server must send it
            assert all(f.removeprefix("folder.path contains ") in path for f in filters)

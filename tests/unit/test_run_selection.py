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

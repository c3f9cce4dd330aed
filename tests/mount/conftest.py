"""Fixtures shared by the mount tests that keep one devserver per module.

``xdg`` gives every process a module starts private XDG state and cache directories;
``module_server`` is the module's devserver (a module may override it, e.g. with other
devserver options); ``server`` is that devserver for one test: its log is attached to a
failure and its faults are cleared after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import report_log_on_failure

from testbed.devserver import DevServer


@pytest.fixture(scope="module")
def xdg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Private XDG state and cache directories for every process the module starts."""
    base = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(base / "state"))
        patch.setenv("XDG_CACHE_HOME", str(base / "cache"))
        yield base


@pytest.fixture(scope="module")
def module_server(xdg: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("server")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(module_server: DevServer, request: pytest.FixtureRequest) -> Iterator[DevServer]:
    """The module's devserver for one test: its log attached to failures, faults cleared."""
    report_log_on_failure(request, module_server)
    try:
        yield module_server
    finally:
        module_server.clear_faults()

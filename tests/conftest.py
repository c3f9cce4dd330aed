"""Shared fixtures: real devservers on 127.0.0.1 (see ``tests/devserver_util.py``).

The level of a test is its folder: ``tests/unit`` (no server, no mount), ``tests/server``
(a real devserver over HTTP, no mount) and ``tests/mount`` (real FUSE mounts). Every test
under ``tests/mount`` is marked ``fuse``, so ``pytest -m "not fuse"`` runs without mounting.

pytest-trio runs ``async def`` tests under trio (``trio_mode = true`` in pyproject.toml);
the fixtures here are synchronous, so they work for sync and trio tests alike.

When a test that used a devserver fails, the server's stderr log is attached to the report
(section "devserver log"), which is more useful than sleeping to let logs settle.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from devserver_util import SEEDED_LARGE_SIZE, DevServer


def _remember(request: pytest.FixtureRequest, server: DevServer) -> None:
    servers: list[DevServer] = request.node.__dict__.setdefault("_devservers", [])
    servers.append(server)


@pytest.fixture
def devserver(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevServer]:
    """A fresh, empty devserver for this test."""
    server = DevServer(tmp_path / "devserver").start()
    _remember(request, server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def devserver_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DevServer]]:
    """Start devservers with extra command-line options; all are stopped after the test."""
    started: list[DevServer] = []

    def start(*extra_args: str) -> DevServer:
        server = DevServer(tmp_path / f"devserver{len(started)}", extra_args)
        started.append(server)
        _remember(request, server)
        return server.start()

    try:
        yield start
    finally:
        errors = []
        for server in started:
            try:
                server.stop()
            except AssertionError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def _seeded_devserver_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(
        tmp_path_factory.mktemp("seeded"),
        ["--seed", "demo", "--large-size", str(SEEDED_LARGE_SIZE)],
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seeded_devserver(
    _seeded_devserver_session: DevServer, request: pytest.FixtureRequest
) -> DevServer:
    """The session's devserver seeded with ``--seed demo`` (see simvuefs.devserver.seed);
    faults are cleared before each test. Do not modify its runs or artifacts."""
    _seeded_devserver_session.clear_faults()
    _remember(request, _seeded_devserver_session)
    return _seeded_devserver_session


MOUNT_TESTS = Path(__file__).resolve().parent / "mount"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under ``tests/mount`` with ``fuse``."""
    for item in items:
        if MOUNT_TESTS in item.path.parents:
            item.add_marker(pytest.mark.fuse)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log of every devserver a failing test used to its report."""
    report = yield
    if report.failed:
        for server in item.__dict__.get("_devservers", []):
            report.sections.append((f"devserver log ({server.workdir})", server.log()[-20000:]))
    return report

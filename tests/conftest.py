"""Shared fixtures: real devservers on 127.0.0.1 (``tests/devserver_util.py`` lists them), and
an offline cache written by the official client (``tests/offline_util.py``).

The level of a test is its folder: ``tests/unit`` (no server, no mount), ``tests/server``
(a real devserver over HTTP, no mount) and ``tests/mount`` (real FUSE mounts). Every test
under ``tests/mount`` is marked ``fuse``, so ``pytest -m "not fuse"`` runs without mounting.

pytest-trio runs ``async def`` tests under trio (``trio_mode = true`` in pyproject.toml);
the fixtures here are synchronous, so they work for sync and trio tests alike.

When a test that used a devserver fails, the server's stderr log is attached to the report
(section "devserver log"), which is more useful than sleeping to let logs settle.

Invariant: only tests under ``tests/mount`` mount. Elsewhere the harness's mount starters
(``testbed.mounts.start_daemon``/``start_foreground``) fail the test that calls them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from devserver_util import SEEDED_LARGE_SIZE
from helpers import DEVSERVERS_USED, report_log_on_failure
from offline_util import make_official_run
from tls_util import TLSFiles, https_devserver, make_tls_files

from testbed import mounts
from testbed.devserver import DevServer


@pytest.fixture
def devserver(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevServer]:
    """A fresh, empty devserver for this test."""
    server = DevServer(tmp_path / "devserver").start()
    report_log_on_failure(request, server)
    try:
        yield server
    finally:
        server.stop()


def _stop_all(started: list[DevServer]) -> None:
    """Stop every server in *started*; raise the first failure once all were tried."""
    errors = []
    for server in started:
        try:
            server.stop()
        except AssertionError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def devserver_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DevServer]]:
    """Start devservers with extra command-line options; all are stopped after the test."""
    started: list[DevServer] = []

    def start(*extra_args: str) -> DevServer:
        server = DevServer(tmp_path / f"devserver{len(started)}", extra_args)
        started.append(server)
        report_log_on_failure(request, server)
        return server.start()

    try:
        yield start
    finally:
        _stop_all(started)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """The session's private CAs and certificates (``tests/tls_util.py``)."""
    return make_tls_files(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def https_devservers(
    tmp_path: Path, tls_files: TLSFiles, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DevServer]]:
    """Start HTTPS devservers with :func:`tls_util.https_devserver` (extra options given,
    ``client_auth=True`` to require client certificates), in ``tmp_path/https<n>``; all are
    stopped after the test."""
    started: list[DevServer] = []

    def start(*extra_args: str, client_auth: bool = False) -> DevServer:
        directory = tmp_path / f"https{len(started)}"
        server = https_devserver(directory, tls_files, *extra_args, client_auth=client_auth)
        started.append(server)
        report_log_on_failure(request, server)
        return server.start()

    try:
        yield start
    finally:
        _stop_all(started)


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
    report_log_on_failure(request, _seeded_devserver_session)
    return _seeded_devserver_session


@pytest.fixture(scope="session")
def official_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An offline cache holding one official offline run, and that run's record (shared by
    the session: change a copy, ``offline_cache``)."""
    workdir = tmp_path_factory.mktemp("official")
    cache = workdir / "cache"
    run = make_official_run(workdir, cache)
    return cache, run


@pytest.fixture
def offline_cache(official_cache: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A private copy of the official offline cache."""
    copy = tmp_path / "cache"
    shutil.copytree(official_cache[0], copy)
    return copy


@pytest.fixture
def offline_run_id(official_cache: tuple[Path, dict[str, Any]]) -> str:
    """The offline id of the official run in ``offline_cache``."""
    identifier: str = official_cache[1]["id"]
    return identifier


MOUNT_TESTS = Path(__file__).resolve().parent / "mount"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under ``tests/mount`` with ``fuse``."""
    for item in items:
        if MOUNT_TESTS in item.path.parents:
            item.add_marker(pytest.mark.fuse)


@pytest.fixture(autouse=True)
def _mounts_only_under_tests_mount(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make the harness refuse to mount in a test that is not marked ``fuse``."""
    if request.node.get_closest_marker("fuse") is not None:
        return

    def refuse(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"{request.node.nodeid} mounts: move it to tests/mount")

    monkeypatch.setattr(mounts, "start_daemon", refuse)
    monkeypatch.setattr(mounts, "start_foreground", refuse)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log of every devserver a failing test used to its report."""
    report = yield
    if report.failed:
        for server in item.stash.get(DEVSERVERS_USED, []):
            report.sections.append((f"devserver log ({server.workdir})", server.log()[-20000:]))
    return report

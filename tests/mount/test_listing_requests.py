"""Listings cost requests per run, never per artifact (real mounts, real devserver).

Request counts come from the devserver's ``/admin/stats`` (``api_requests`` by route;
``storage_gets`` for content), so they are exact, unlike timings. The data is written
straight into the devserver's store (``listing_util.py``): runs ``run-0000``... with a few
artifacts each across ``input``/``output``/``code``, and one run with a big ``output/``.

What must hold: ``runs/`` is one paged ``GET /api/runs`` (pages of 100), every run's
three categories together one ``GET /api/runs/{id}/artifacts``, whatever the number of
artifacts; nothing per artifact (no ``GET /api/artifacts/{id}``, no content); within the
TTL nothing at all, including for names that do not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from listing_util import BIG_RUN, Layout, fill, run_name

from simvuefs.fuse.lookahead import MAX_WINDOW
from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted
from testbed.processes import run_tool, wait_until

RUNS_ROUTE = "GET /api/runs"
ARTIFACTS_ROUTE = "GET /api/runs/{run_id}/artifacts"
TTL = ("--metadata-ttl", "600")  # no listing expires during a test: counts are exact


@contextmanager
def mounted_layout(tmp_path: Path, layout: Layout) -> Iterator[tuple[DevServer, Mount]]:
    """A devserver over a store filled with *layout*, and a mount of it."""
    fill(tmp_path / "data", layout)
    server = DevServer(tmp_path / "server", data_dir=tmp_path / "data").start()
    try:
        with mounted(server, tmp_path, *TTL) as mount:
            server.reset_stats()
            yield server, mount
    finally:
        server.stop()


def requests_of(server: DevServer, *command: str | Path) -> tuple[dict[str, int], list[str]]:
    """Run *command*; return the API requests it caused (by route) and its output lines.

    Fails when it read any content: listings and ``stat`` never download.
    """
    server.reset_stats()
    lines = run_tool([str(part) for part in command]).stdout.decode().splitlines()
    stats = server.stats()
    assert (stats["storage_gets"], stats["range_gets"]) == (0, 0)
    return stats["api_requests"], lines


def test_ls_l_of_a_big_directory_is_one_listing_request(tmp_path: Path) -> None:
    with mounted_layout(tmp_path, Layout(runs=3, per_run=2, big=300)) as (server, mount):
        big = mount.path / "runs" / BIG_RUN / "output"
        requests, lines = requests_of(server, "ls", "-l", big)
        assert requests == {RUNS_ROUTE: 1, ARTIFACTS_ROUTE: 1}
        assert len(lines) == 1 + 300  # "total", then one line per artifact
        assert lines[1].startswith("-r--r--r--")
        assert requests_of(server, "ls", "-l", big) == ({}, lines)
        # The other categories of the run came with the same request.
        assert requests_of(server, "ls", "-l", big.parent / "input", big.parent / "code")[0] == {}


def _find_requests(tmp_path: Path, per_run: int) -> tuple[dict[str, int], int]:
    layout = Layout(runs=40, per_run=per_run, big=0)
    with mounted_layout(tmp_path, layout) as (server, mount):
        runs = mount.path / "runs"
        assert requests_of(server, "ls", "-l", runs)[0] == {RUNS_ROUTE: 1}  # no run's artifacts
        run_dirs = sorted(runs.iterdir())
        assert requests_of(server, "ls", "-l", *run_dirs)[0] == {}  # entered, nothing listed
        requests, lines = requests_of(server, "find", runs)
        assert len(lines) == 1 + layout.runs * 4 + layout.artifact_count
        assert requests_of(server, "find", runs, "-ls")[0] == {}  # warm, within the TTL
        return requests, layout.runs


def test_find_costs_one_request_per_run_whatever_the_number_of_artifacts(
    tmp_path: Path,
) -> None:
    few, runs = _find_requests(tmp_path / "few", per_run=2)
    many, _ = _find_requests(tmp_path / "many", per_run=12)
    assert few == many == {ARTIFACTS_ROUTE: runs}  # runs/ was listed by ls -l before


def test_runs_listing_pages_are_100_runs(tmp_path: Path) -> None:
    with mounted_layout(tmp_path, Layout(runs=250, per_run=0, big=0)) as (server, mount):
        requests, lines = requests_of(server, "ls", mount.path / "runs")
        assert requests == {RUNS_ROUTE: 3}
        assert lines[0] == run_name(0)
        assert len(lines) == 250


def test_missing_names_cost_no_request_within_the_ttl(tmp_path: Path) -> None:
    with mounted_layout(tmp_path, Layout(runs=2, per_run=3, big=0)) as (server, mount):
        run = mount.path / "runs" / run_name(1)
        missing = [run / "output" / "nope.dat", run / "output" / "sub" / "nope", run / "nope"]
        missing.append(mount.path / "runs" / "no-such-run")
        script = "; ".join(f"stat '{path}' 2>/dev/null" for path in missing * 20)
        requests_of(server, "ls", run / "output")  # the listings the misses are judged by
        assert requests_of(server, "sh", "-c", script + "; true")[0] == {}
        assert not (run / "output" / "nope.dat").exists()


def test_a_walk_that_stops_lists_at_most_the_window_ahead(tmp_path: Path) -> None:
    # Five runs' artifacts needed in listing order: the next MAX_WINDOW runs are listed
    # ahead (windows 2, 4, 8, 16), no more, and a find afterwards asks only for the rest:
    # every run once in all.
    layout = Layout(runs=40, per_run=2, big=0)
    with mounted_layout(tmp_path, layout) as (server, mount):
        runs = mount.path / "runs"
        run_tool(["ls", str(runs)])
        server.reset_stats()
        first = [runs / run_name(index) / "output" for index in range(5)]
        assert len(run_tool(["ls", *map(str, first)]).stdout.splitlines()) >= 5

        def listed() -> int:
            return int(server.stats()["api_requests"].get(ARTIFACTS_ROUTE, 0))

        assert wait_until(lambda: listed() == 5 + MAX_WINDOW, timeout=10), listed()
        lines = run_tool(["find", str(runs)]).stdout.decode().splitlines()
        assert len(lines) == 1 + layout.runs * 4 + layout.artifact_count
        stats = server.stats()
        assert stats["api_requests"] == {ARTIFACTS_ROUTE: layout.runs}
        assert (stats["storage_gets"], stats["range_gets"]) == (0, 0)
        # Opening and reading a listed file asks the API nothing: one storage request.
        listed_file = next(line for line in lines if f"/{run_name(7)}/" in line and ".dat" in line)
        server.reset_stats()
        assert run_tool(["head", "-c", "1", listed_file]).stdout == b"r"  # "run run-0007 ..."
        stats = server.stats()
        assert (stats["api_requests"], stats["storage_gets"]) == ({}, 1)

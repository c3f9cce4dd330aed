"""The listing job: ls -l and find through simvuefs against a direct walk of the API."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from benchmarks.context import Context
from benchmarks.data import BIG_RUN
from benchmarks.harness import Mounted
from benchmarks.measure import Broken, Table
from testbed.devserver import DevServer

API_WALK = "httpx API walk"
IN_FLIGHT = 16
CONCURRENT_WALK = f"httpx API walk, {IN_FLIGHT} requests in flight"
"""The field profile's reference for find: the same walk, round trips overlapped."""
API_PAGE = 100
"""Runs per page in the API walk (the most the devserver gives, as simvuefs asks)."""


def listing(ctx: Context) -> Table:
    """simvuefs only: ls -l and find over the listing runs (cold on a fresh mount, then warm)
    and ls -l of one directory of many artifacts: time and API requests (devserver
    /admin/stats), against a direct httpx walk of the API (the runs pages, then one artifact
    listing per run: on one connection (loopback only), and with 16 requests in flight)."""
    sizes = ctx.data.sizes
    runs = sizes.runs + 3
    title = (
        f"Listing {sizes.runs:,} runs x {sizes.per_run} artifacts (simvuefs; {runs:,} runs in all)"
    )
    columns = ["API requests", "run-list requests", "artifact-list requests"]
    field = ctx.profile.field
    table = Table("listing", title, "ms", CONCURRENT_WALK if field else API_WALK)
    table.extra_columns = columns
    expected_files = sizes.runs * sizes.per_run + sizes.big_dir
    walks = (
        [(CONCURRENT_WALK, IN_FLIGHT)] if field else [(API_WALK, 1), (CONCURRENT_WALK, IN_FLIGHT)]
    )
    for _ in range(ctx.repeat):
        for name, in_flight in walks:
            walked = _counted(ctx, table, name, _api_walk, ctx.devserver, in_flight)
            if walked.count(".dat\n") != expected_files:
                raise Broken(f"{name}: found {walked.count('.dat')} artifacts")
        with ctx.harness.mount("simvuefs") as mounted:
            runs_dir = mounted.root / "runs"
            steps: list[tuple[str, list[str]]] = [
                ("ls -l runs (cold)", ["ls", "-l", str(runs_dir)]),
                ("find runs (cold listings)", ["find", str(runs_dir)]),
                ("find runs (again, warm)", ["find", str(runs_dir)]),
            ]
            for name, command in steps:
                output = _counted(ctx, table, name, _run_quietly, command, mounted=mounted)
                if name.startswith("find") and output.count(".dat\n") != expected_files:
                    raise Broken(f"simvuefs: find listed {output.count('.dat')} artifacts")
        with ctx.harness.mount("simvuefs") as mounted:
            big = mounted.root / "runs" / BIG_RUN / "output"
            name = f"ls -l of a {sizes.big_dir:,}-artifact directory (fresh mount)"
            command = ["ls", "-l", str(big)]
            output = _counted(ctx, table, name, _run_quietly, command, mounted=mounted)
            if output.count(".dat\n") != sizes.big_dir:
                raise Broken(f"simvuefs: ls -l {BIG_RUN}/output listed the wrong entries")
    return table


def _run_quietly(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _api_walk(devserver: DevServer, in_flight: int) -> str:
    """List every run and every run's artifacts through the API with *in_flight* requests at
    once (the runs pages after the first, then the artifact listings); return the artifact
    names, one a line."""
    headers = {"Authorization": f"Bearer {devserver.token}"}
    limits = httpx.Limits(max_connections=in_flight)
    with (
        httpx.Client(
            base_url=devserver.url + "/api", headers=headers, timeout=60, limits=limits
        ) as api,
        ThreadPoolExecutor(in_flight) as pool,
    ):

        def get(path: str, params: dict[str, str] | None = None) -> Any:
            return api.get(path, params=params).raise_for_status().json()

        def page(start: int) -> list[dict[str, Any]]:
            data: list[dict[str, Any]] = get(
                "/runs", {"count": str(API_PAGE), "start": str(start)}
            )["data"]
            return data

        first = get("/runs", {"count": str(API_PAGE), "start": "0"})
        runs = list(first["data"])
        if in_flight > 1:
            starts = range(API_PAGE, int(first["count"]), API_PAGE)
            for more in pool.map(page, starts):
                runs += more
        else:
            while len(runs) % API_PAGE == 0 and (more := page(len(runs))):
                runs += more
        listings = pool.map(lambda run: get(f"/runs/{run['id']}/artifacts"), runs)
        return "".join(f"{artifact['name']}\n" for found in listings for artifact in found)


def _counted(
    ctx: Context,
    table: Table,
    name: str,
    function: Callable[..., str],
    *args: Any,
    mounted: Mounted | None = None,
) -> str:
    """Call *function(*args)* with fresh devserver counters; add its time, the daemon's
    peak RSS and the request counts as row *name*; return what it returned."""
    ctx.devserver.reset_stats()
    start = time.perf_counter()
    output = function(*args)
    elapsed = time.perf_counter() - start
    counts: dict[str, int] = ctx.devserver.stats()["api_requests"]
    artifact_lists = counts.get("GET /api/runs/{run_id}/artifacts", 0)
    artifact_lists += counts.get("GET /api/artifacts", 0)
    result = table.result(name)
    result.add(elapsed * 1000, rss=mounted.peak_rss() if mounted else 0)
    result.notes["API requests"] = str(sum(counts.values()))
    result.notes["run-list requests"] = str(counts.get("GET /api/runs", 0))
    result.notes["artifact-list requests"] = str(artifact_lists)
    return output

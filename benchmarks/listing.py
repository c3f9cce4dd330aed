"""The listing job: ls -l and find through simvuefs against a direct walk of the API."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks.context import Context
from benchmarks.data import BIG_RUN
from benchmarks.harness import Mounted
from benchmarks.measure import Broken, Table
from testbed.devserver import DevServer

API_WALK = "httpx API walk"
API_PAGE = 100
"""Runs per page in the API walk (the most the devserver gives, as simvuefs asks)."""


def listing(ctx: Context) -> Table:
    """simvuefs only: ls -l and find over the listing runs (cold on a fresh mount, then warm)
    and ls -l of one directory of many artifacts: time and API requests (devserver
    /admin/stats), against a direct httpx walk of the API (the runs pages, then one artifact
    listing per run, on one connection)."""
    sizes = ctx.data.sizes
    runs = sizes.runs + 3
    title = (
        f"Listing {sizes.runs:,} runs x {sizes.per_run} artifacts (simvuefs; {runs:,} runs in all)"
    )
    columns = ["API requests", "run-list requests", "artifact-list requests"]
    table = Table("listing", title, "ms", API_WALK)
    table.extra_columns = columns
    expected_files = sizes.runs * sizes.per_run + sizes.big_dir
    for _ in range(ctx.repeat):
        walked = _counted(ctx, table, API_WALK, _api_walk, ctx.devserver)
        if walked.count(".dat\n") != expected_files:
            raise Broken(f"httpx API walk: found {walked.count('.dat')} artifacts")
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


def _api_walk(devserver: DevServer) -> str:
    """List every run and every run's artifacts through the API; return the artifact names,
    one a line."""
    names = []
    headers = {"Authorization": f"Bearer {devserver.token}"}
    with httpx.Client(base_url=devserver.url + "/api", headers=headers, timeout=60) as api:
        run_ids: list[str] = []
        while True:
            params = {"count": str(API_PAGE), "start": str(len(run_ids))}
            page = api.get("/runs", params=params).raise_for_status().json()["data"]
            run_ids += [run["id"] for run in page]
            if len(page) < API_PAGE:
                break
        for run_id in run_ids:
            artifacts = api.get(f"/runs/{run_id}/artifacts").raise_for_status().json()
            names += [artifact["name"] for artifact in artifacts]
    return "".join(f"{name}\n" for name in names)


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

"""The runs listing fetches its pages concurrently once the first page gives the total
(``SimvueClient.list_runs``), against a fake API (``httpx.MockTransport``) whose pages take
virtual time (trio's MockClock): how many are in flight, in what order the runs come, and
that runs created between pages or pages shorter than the first push none out.

The same listing against the devserver (capped pages, runs created while paging) is in
``tests/server/test_client.py``; through a mount, ``tests/mount/test_listing_requests.py``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from helpers import settings_for

from simvuefs.backends.client import RUN_PAGES_IN_FLIGHT, SimvueClient
from simvuefs.errors import StatusError

SETTINGS = settings_for(retry_attempts=1, request_timeout=30.0)
PAGE_DELAY = 0.02  # virtual seconds each page takes: a WAN round trip


class RunsApi:
    """``GET /api/runs`` over *total* runs ``r0000``..., oldest first, pages of at most
    *cap*; records the ``start`` of each request and the most requests in flight."""

    def __init__(self, total: int, cap: int = 100) -> None:
        self.ids = [f"r{index:04d}" for index in range(total)]
        self.cap = cap
        self.starts: list[int] = []
        self.in_flight = self.peak = 0
        self.ignore_start = False
        self.failing_start: int | None = None
        self.after_first_page: list[str] = []  # ids of runs created then
        self.short_pages: dict[int, int] = {}  # start -> a lower cap for that page

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        count = min(int(request.url.params["count"]), self.short_pages.get(start, self.cap))
        self.starts.append(start)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await trio.sleep(PAGE_DELAY)
        finally:
            self.in_flight -= 1
        if start == self.failing_start:
            return httpx.Response(400, json={"detail": "bad page"})
        if self.ignore_start:
            start = 0
        page = self.ids[start : start + count]
        body: dict[str, Any] = {
            "data": [{"id": run_id, "name": f"n-{run_id}"} for run_id in page],
            "count": len(self.ids),
        }
        if len(self.starts) == 1:
            self.ids += self.after_first_page
        return httpx.Response(200, json=body)


async def listed(api: RunsApi) -> list[str]:
    async with SimvueClient.open(SETTINGS, transport=httpx.MockTransport(api)) as client:
        return [run.id for run in await client.list_runs()]


async def test_pages_after_the_first_are_fetched_at_once_in_order(autojump_clock) -> None:
    api = RunsApi(1000)
    began = trio.current_time()
    assert await listed(api) == api.ids
    assert sorted(api.starts) == list(range(0, 1000, 100))  # each page once
    assert api.starts[0] == 0
    assert api.peak == 9  # the nine pages after the first, together
    assert trio.current_time() - began == pytest.approx(2 * PAGE_DELAY)  # two round trips


async def test_pages_in_flight_are_bounded(autojump_clock) -> None:
    api = RunsApi(5000)
    assert await listed(api) == api.ids
    assert len(api.starts) == 50
    assert api.peak == RUN_PAGES_IN_FLIGHT


async def test_capped_pages_are_asked_for_by_the_length_seen(autojump_clock) -> None:
    api = RunsApi(20, cap=7)
    assert await listed(api) == api.ids
    assert sorted(api.starts) == [0, 7, 14]


async def test_runs_created_after_the_first_page_are_listed(autojump_clock) -> None:
    api = RunsApi(250)
    api.after_first_page = [f"new{index}" for index in range(120)]
    ids = await listed(api)
    assert ids == api.ids  # every run once, oldest first, the new ones last
    assert len(ids) == 370


async def test_a_shorter_page_drops_the_pages_fetched_after_it(autojump_clock) -> None:
    # The page at 200 holds 50 runs: the pages at 300... skip runs 250-299; paging goes on
    # from 250 instead.
    api = RunsApi(1000)
    api.short_pages[200] = 50
    assert await listed(api) == api.ids
    assert sorted(api.starts)[:4] == [0, 100, 200, 250]
    assert len(api.starts) == 1 + 9 + 8  # then 250, 350, ... 950


async def test_a_failed_page_fails_the_listing(autojump_clock) -> None:
    api = RunsApi(1000)
    api.failing_start = 300
    with pytest.raises(StatusError):
        await listed(api)


async def test_a_server_that_ignores_start_costs_one_batch(autojump_clock) -> None:
    api = RunsApi(1000)
    api.ignore_start = True
    assert await listed(api) == api.ids[:100]
    assert len(api.starts) == 10  # the first page and one batch, stopped at the first repeat


async def test_pages_that_did_not_change_are_decoded_once(autojump_clock) -> None:
    # A runs listing in use is listed again every TTL: an unchanged page (byte for byte)
    # gives the records decoded last time; a page that changed is decoded afresh.
    api = RunsApi(250)
    async with SimvueClient.open(SETTINGS, transport=httpx.MockTransport(api)) as client:
        first = await client.list_runs()
        again = await client.list_runs()
        assert [run.id for run in again] == api.ids
        assert all(new is old for new, old in zip(again, first, strict=True))
        api.ids[120] = "r-new"  # on the second page only
        changed = await client.list_runs()
        assert [run.id for run in changed] == api.ids
        assert [new is old for new, old in zip(changed, first, strict=True)] == (
            [True] * 100 + [False] * 100 + [True] * 50
        )
        other = await client.list_runs(["has.tag.x"])  # another query: its own pages
        assert not any(new is old for new, old in zip(other, changed, strict=True))
        assert len(api.starts) == 4 * 3  # every page asked for each time

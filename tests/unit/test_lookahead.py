"""Run directories listed ahead of a walk in listing order (``fuse/lookahead.py`` through
``Tree``), against a fake client whose artifact listings take 20 ms of virtual time
(trio's MockClock): requests are counted exactly, and the walk's virtual duration shows
the listings overlapping.

Through a real mount and devserver: ``tests/mount/test_listing_requests.py``.
"""

from __future__ import annotations

import pytest
import trio
from helpers import settings_for
from record_util import art, run

from simvuefs.errors import NotFound, TransportError
from simvuefs.fuse.lookahead import MAX_WINDOW
from simvuefs.fuse.tree import Tree
from simvuefs.models import CATEGORIES

SETTINGS = settings_for(metadata_ttl=600.0)
DELAY = 0.02  # virtual seconds per artifact listing: a WAN round trip


class SlowClient:
    """*runs* runs ``run-000``... with one artifact each in ``output/``; each artifact
    listing takes :data:`DELAY`; counts listings per run and the most in flight."""

    def __init__(self, runs: int) -> None:
        self.runs = [run(f"id{index:03d}", f"run-{index:03d}", index) for index in range(runs)]
        self.listings: list[str] = []
        self.in_flight = self.peak = 0
        self.fail_once: set[str] = set()
        self.categorised = True

    async def list_runs(self, filters=()):
        await trio.lowlevel.checkpoint()
        return list(self.runs)

    async def list_artifacts(self, run_id, category=None, name=None, known=None):
        self.listings.append(run_id)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await trio.sleep(DELAY)
        finally:
            self.in_flight -= 1
        if run_id in self.fail_once:
            self.fail_once.discard(run_id)
            raise TransportError("connection reset")
        if category not in (None, "output"):
            raise NotFound("no artifacts", status=404)
        artifact = art(f"a-{run_id}", "result.dat")
        return [artifact.replace(category="output") if self.categorised else artifact]


async def walk(
    tree: Tree, count: int | None = None, reverse: bool = False, by_name: bool = False
) -> list[str]:
    """Do what ``find runs`` does (of the first *count* runs): read ``runs/``, then enter
    each run (in ``readdir`` order, reversed, or by name like ``ls -R``) and read its
    categories; return the files found."""
    found = []
    runs = await tree.children(tree.runs_node())
    runs = sorted(runs) if by_name else runs[::-1] if reverse else runs
    for _, run_node in runs[:count]:
        for _, category in await tree.children(run_node):
            found += [name for name, _ in await tree.children(category)]
    return found


async def walked(
    client: SlowClient, lookahead: bool = True, tree: Tree | None = None, **how
) -> tuple[list[str], float]:
    """Walk *tree* (default: a new one) over *client* (with the lookahead started, or not);
    return the files found and the virtual seconds the walk took, once every listing ahead
    ended."""
    tree = tree or Tree(client, SETTINGS)
    async with trio.open_nursery() as nursery:
        if lookahead:
            tree.start_lookahead(nursery)
        began = trio.current_time()
        found = await walk(tree, **how)
        took = trio.current_time() - began
    return found, took


async def test_a_walk_in_listing_order_lists_each_run_once_and_ahead(autojump_clock) -> None:
    client = SlowClient(100)
    found, took = await walked(client)
    assert found == ["result.dat"] * 100
    assert sorted(client.listings) == [r.id for r in client.runs]  # each run once, no more
    assert MAX_WINDOW <= client.peak <= MAX_WINDOW + 1  # the window, and the walker
    assert took < 100 * DELAY / 8  # one by one it takes 100 x DELAY:
    client = SlowClient(100)
    found, took = await walked(client, lookahead=False)
    assert (len(found), took) == (100, pytest.approx(100 * DELAY))
    assert client.peak == 1


async def test_a_walker_that_stops_cost_at_most_the_window(autojump_clock) -> None:
    client = SlowClient(100)
    await walked(client, count=5)
    assert len(client.listings) == 5 + MAX_WINDOW  # windows 2, 4, 8, 16 after runs 1-4
    client = SlowClient(100)
    await walked(client, count=1)
    assert len(client.listings) == 1  # one run is no pattern


async def test_runs_needed_out_of_order_are_not_listed_ahead(autojump_clock) -> None:
    client = SlowClient(30)
    assert len((await walked(client, reverse=True))[0]) == 30
    assert len(client.listings) == 30
    assert client.peak == 1


async def test_a_walk_in_name_order_is_listed_ahead_too(autojump_clock) -> None:
    # Runs that came after the first readdir of runs/ come last in readdir order (their
    # inodes are new), but ls -R takes them by name, between the others.
    client = SlowClient(40)
    everything, client.runs = client.runs, client.runs[::2]
    tree = Tree(client, SETTINGS)
    await tree.children(tree.runs_node())
    client.runs = everything
    await trio.sleep(SETTINGS.metadata_ttl + 1)
    found, took = await walked(client, tree=tree, by_name=True)
    assert len(found) == len(client.listings) == 40
    assert took < 40 * DELAY / 4


async def test_reading_runs_and_run_directories_lists_no_artifacts(autojump_clock) -> None:
    client = SlowClient(40)
    tree = Tree(client, SETTINGS)
    async with trio.open_nursery() as nursery:
        tree.start_lookahead(nursery)
        runs_node = tree.runs_node()
        for name, run_node in await tree.children(runs_node):  # ls -l runs/*
            assert await tree.lookup(runs_node, name) is run_node
            for category, node in await tree.children(run_node):
                assert await tree.lookup(run_node, category) is node
    assert client.listings == []


async def test_a_listing_ahead_that_fails_is_asked_again_by_the_walker(
    autojump_clock, caplog: pytest.LogCaptureFixture
) -> None:
    client = SlowClient(20)
    client.fail_once = {"id010"}
    assert len((await walked(client))[0]) == 20
    assert client.listings.count("id010") == 2
    assert len(client.listings) == 21
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


async def test_servers_without_categories_are_listed_ahead_per_category(autojump_clock) -> None:
    client = SlowClient(20)
    client.categorised = False
    found, took = await walked(client)
    assert found == ["result.dat"] * 20
    # The first run's listing finds out (and is repeated per category); then three a run.
    assert len(client.listings) == 1 + len(CATEGORIES) * 20
    assert took < 20 * len(CATEGORIES) * DELAY / 4


# -- the runs listing listed again before it expires while in use ---------------------------


class SlowRuns(SlowClient):
    """A :class:`SlowClient` whose runs listing takes :data:`DELAY` too, and can fail."""

    def __init__(self, runs: int, delay: float = DELAY) -> None:
        super().__init__(runs)
        self.runs_listings = self.runs_in_flight = self.runs_peak = 0
        self.fail_runs = False
        self.delay = delay

    async def list_runs(self, filters=()):
        self.runs_listings += 1
        self.runs_in_flight += 1
        self.runs_peak = max(self.runs_peak, self.runs_in_flight)
        try:
            await trio.sleep(self.delay)
        finally:
            self.runs_in_flight -= 1
        if self.fail_runs:
            raise TransportError("connection reset")
        return list(self.runs)


async def lookups_every(tree: Tree, interval: float, seconds: float) -> float:
    """Look a run up in ``runs/`` every *interval* for *seconds*; return the longest wait."""
    longest = 0.0
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        began = trio.current_time()
        assert await tree.lookup(tree.runs_node(), "run-003") is not None
        longest = max(longest, trio.current_time() - began)
        await trio.sleep(interval)
    return longest


async def test_a_runs_listing_in_use_is_listed_again_before_it_expires(autojump_clock) -> None:
    client = SlowRuns(10)
    tree = Tree(client, settings_for(metadata_ttl=1.0))
    await tree.children(tree.runs_node())
    async with trio.open_nursery() as nursery:
        tree.start_lookahead(nursery)
        assert await lookups_every(tree, 0.05, 10) == 0  # no lookup waits for a listing
    assert 10 <= client.runs_listings <= 13  # one a TTL (a little less while in use)
    await trio.sleep(30)
    assert client.runs_listings <= 13  # unused: nothing
    # Without it, a lookup waits for the listing once a TTL.
    client = SlowRuns(10)
    tree = Tree(client, settings_for(metadata_ttl=1.0))
    await tree.children(tree.runs_node())
    assert await lookups_every(tree, 0.05, 10) == pytest.approx(DELAY)
    assert 8 <= client.runs_listings <= 11


async def test_a_failed_refresh_lets_the_listing_expire(autojump_clock) -> None:
    client = SlowRuns(10)
    tree = Tree(client, settings_for(metadata_ttl=1.0))
    await tree.children(tree.runs_node())
    async with trio.open_nursery() as nursery:
        tree.start_lookahead(nursery)
        client.fail_runs = True
        with pytest.raises(TransportError):
            await lookups_every(tree, 0.05, 3)  # the refresh failed; then the lookup's own
        client.fail_runs = False
        assert await lookups_every(tree, 0.05, 3) == pytest.approx(DELAY)  # once, then none


async def test_a_lookup_after_expiry_waits_for_the_listing_under_way(autojump_clock) -> None:
    # A runs listing slower than the refresh's margin (at most half the TTL): the value
    # expires while the new one is being listed. Lookups then wait for that listing instead
    # of asking again: one listing at a time, one a TTL or fewer.
    client = SlowRuns(10, delay=0.8)
    tree = Tree(client, settings_for(metadata_ttl=1.0))
    await tree.children(tree.runs_node())
    async with trio.open_nursery() as nursery:
        tree.start_lookahead(nursery)
        longest = await lookups_every(tree, 0.05, 10)
        nursery.cancel_scope.cancel()
    assert client.runs_peak == 1
    assert 0 < longest < 0.8  # what is left of the listing under way, never a new one
    assert 7 <= client.runs_listings <= 11

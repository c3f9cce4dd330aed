"""MetaCache (TTL, in-flight de-duplication, errors not cached) and BlockCache (LRU in bytes)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from simvuefs.errors import NotFound, TransportError
from simvuefs.read.cache import BlockCache, FlightAbandoned, MetaCache


class Loader:
    """A load function that counts its calls and can be held open until released."""

    def __init__(self, value: str = "v", error: Exception | None = None) -> None:
        self.value = value
        self.error = error
        self.calls = 0
        self.gate = trio.Event()
        self.gate.set()

    async def __call__(self) -> str:
        self.calls += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return f"{self.value}{self.calls}"


# -- MetaCache -------------------------------------------------------------------------------


async def test_value_is_served_until_its_ttl_passes(mock_clock: trio.testing.MockClock) -> None:
    cache: MetaCache[str, str] = MetaCache(maxsize=10)
    load = Loader()
    assert await cache.get_or_load("k", load, ttl=5) == "v1"
    mock_clock.jump(4.9)
    assert await cache.get_or_load("k", load, ttl=5) == "v1"
    assert cache.get_nowait("k") == "v1"
    mock_clock.jump(0.2)
    assert cache.get_nowait("k") is None
    assert await cache.get_or_load("k", load, ttl=5) == "v2"
    stats = cache.statistics()
    assert (stats.hits, stats.misses, load.calls) == (1, 2, 2)


async def test_each_entry_has_its_own_ttl(mock_clock: trio.testing.MockClock) -> None:
    cache: MetaCache[str, int] = MetaCache(maxsize=10)
    cache.put("short", 1, ttl=1)
    cache.put("forever", 2, ttl=float("inf"))
    cache.put("never", 3, ttl=0)
    mock_clock.jump(1000)
    assert cache.get_nowait("short") is None
    assert cache.get_nowait("forever") == 2
    assert cache.get_nowait("never") is None


async def test_concurrent_loads_of_one_key_call_load_once() -> None:
    cache: MetaCache[str, str] = MetaCache(maxsize=10)
    load = Loader()
    load.gate = trio.Event()
    results: list[str] = []

    async def get() -> None:
        results.append(await cache.get_or_load("k", load, ttl=60))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        load.gate.set()
    assert results == ["v1"] * 10
    assert load.calls == 1
    assert cache.statistics().joins == 9


async def test_errors_reach_every_waiter_and_are_not_cached() -> None:
    cache: MetaCache[str, str] = MetaCache(maxsize=10)
    load = Loader(error=NotFound("gone", status=404))
    load.gate = trio.Event()
    errors: list[BaseException] = []

    async def get() -> None:
        try:
            await cache.get_or_load("k", load, ttl=60)
        except NotFound as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        load.gate.set()
    assert len(errors) == 3
    assert load.calls == 1
    assert cache.get_nowait("k") is None
    load.error = None
    assert await cache.get_or_load("k", load, ttl=60) == "v2"
    assert cache.statistics().errors == 1


async def test_a_waiter_takes_over_when_the_loader_is_cancelled() -> None:
    cache: MetaCache[str, str] = MetaCache(maxsize=10)
    slow = Loader("slow")
    slow.gate = trio.Event()
    fast = Loader("fast")
    got: list[str] = []

    async def waiter() -> None:
        got.append(await cache.get_or_load("k", fast, ttl=60))

    loader_scope = trio.CancelScope()

    async def loader() -> None:
        with loader_scope:
            await cache.get_or_load("k", slow, ttl=60)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(loader)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        loader_scope.cancel()
    assert got == ["fast1"]
    assert cache.get_nowait("k") == "fast1"


async def test_put_during_a_load_wins_over_the_load() -> None:
    cache: MetaCache[str, str] = MetaCache(maxsize=10)
    load = Loader("old")
    load.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.get_or_load, "k", load, 60)
        await trio.testing.wait_all_tasks_blocked()
        cache.put("k", "new", ttl=60)
        load.gate.set()
    assert cache.get_nowait("k") == "new"


async def test_least_recently_used_entries_go_first() -> None:
    cache: MetaCache[int, int] = MetaCache(maxsize=3)
    for key in range(3):
        cache.put(key, key, ttl=60)
    assert cache.get_nowait(0) == 0  # 0 is now more recent than 1
    cache.put(3, 3, ttl=60)
    assert cache.get_nowait(1) is None
    assert [cache.get_nowait(k) for k in (0, 2, 3)] == [0, 2, 3]
    assert cache.statistics().entries == 3


# -- BlockCache ------------------------------------------------------------------------------


def test_block_cache_is_bounded_in_bytes_and_evicts_lru() -> None:
    cache = BlockCache(max_bytes=10)
    cache.put(("a", 0), b"1234")
    cache.put(("a", 1), b"5678")
    assert cache.lookup(("a", 0)) == b"1234"  # touch: block 1 is now the oldest
    cache.put(("a", 2), b"90ab")
    assert cache.lookup(("a", 1)) is None
    assert cache.lookup(("a", 0)) == b"1234"
    assert cache.lookup(("a", 2)) == b"90ab"
    stats = cache.statistics()
    assert stats.bytes == 8
    assert stats.peak_bytes <= stats.max_bytes == 10
    assert stats.evictions == 1
    assert (stats.hits, stats.misses) == (3, 1)


def test_pinned_blocks_are_never_evicted_until_unpinned() -> None:
    cache = BlockCache(max_bytes=8)
    cache.put(("a", 0), b"1234", pinned=True)
    cache.put(("a", 1), b"5678", pinned=True)
    cache.put(("a", 2), b"90ab", pinned=True)  # 12 bytes pinned: beyond the cache's size
    for index in range(3, 6):
        cache.put(("a", index), b"kept")  # the kept blocks evict each other, never the pinned
    assert [cache.lookup(("a", i)) for i in range(3)] == [b"1234", b"5678", b"90ab"]
    stats = cache.statistics()
    assert (stats.bytes, stats.pinned_bytes, stats.pinned_peak) == (8, 12, 12)
    assert stats.evictions == 1
    cache.unpin(("a", 0))  # now kept, the most recently used: block 4 goes
    cache.unpin(("a", 9))  # not pinned: nothing happens
    assert cache.lookup(("a", 4)) is None
    cache.put(("a", 6), b"more")
    cache.put(("a", 7), b"more")
    assert cache.lookup(("a", 0)) is None  # evictable once unpinned
    cache.discard(("a", 1))  # a pinned block can be dropped
    assert not cache.contains(("a", 1))
    stats = cache.statistics()
    assert (stats.bytes, stats.pinned_bytes, stats.pinned_peak) == (8, 4, 12)


async def test_a_pinned_flight_result_is_pinned() -> None:
    cache = BlockCache(max_bytes=4)
    flight = cache.start(("a", 0))
    cache.finish(("a", 0), flight, b"1234", pinned=True)
    assert await flight.wait() == b"1234"
    cache.put(("a", 1), b"5678")
    assert cache.lookup(("a", 0)) == b"1234"
    assert cache.statistics().pinned_bytes == 4


def test_block_larger_than_the_cache_is_not_stored() -> None:
    cache = BlockCache(max_bytes=3)
    cache.put(("a", 0), b"1234")
    assert cache.lookup(("a", 0)) is None
    assert cache.statistics().bytes == 0


async def test_waiters_share_one_flight() -> None:
    cache = BlockCache(max_bytes=100)
    key = ("sha", 7)
    flight = cache.start(key)
    assert cache.contains(key)
    with pytest.raises(RuntimeError):
        cache.start(key)
    got: list[bytes] = []

    async def wait() -> None:
        found = cache.lookup(key)
        assert found is flight
        got.append(await flight.wait())

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        cache.finish(key, flight, b"data")
    assert got == [b"data"] * 5
    assert cache.lookup(key) == b"data"
    stats = cache.statistics()
    assert (stats.joins, stats.loads, stats.in_flight) == (5, 1, 0)


async def test_failed_flight_raises_to_waiters_and_stores_nothing() -> None:
    cache = BlockCache(max_bytes=100)
    key = ("sha", 0)
    flight = cache.start(key)
    cache.fail(key, flight, TransportError("reset"))
    with pytest.raises(TransportError):
        await flight.wait()
    assert cache.lookup(key) is None
    assert not cache.contains(key)


async def test_abandoned_flight_tells_waiters_to_load_again() -> None:
    cache = BlockCache(max_bytes=100)
    key = ("sha", 0)
    flight = cache.start(key)
    cache.abandon(key, flight)
    with pytest.raises(FlightAbandoned):
        await flight.wait()
    assert not cache.contains(key)
    again = cache.start(key)
    cache.finish(key, again, b"x")
    assert await again.wait() == b"x"

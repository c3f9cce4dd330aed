"""Caches with in-flight de-duplication: ``MetaCache`` (TTL) and ``BlockCache`` (LRU in bytes).

cachetools is not async-aware (its decorators would cache coroutine objects), so both caches
use cachetools containers directly and keep their own table of loads in progress:

- A load is a :class:`Flight`. The task that starts it is its *owner* and must resolve it
  exactly once: ``finish`` (value), ``fail`` (an error handed to the tasks already waiting,
  never stored), or ``abandon`` (the owner was cancelled or gave up; waiters load again).
- Between awaits nothing else runs (one trio thread), so "look up, and start a flight if
  absent" is atomic as long as no await separates the two. Anything read before an await may
  be stale after it; that is why waiters receive the value from the flight itself rather than
  from a second cache lookup (the entry may already be evicted or expired).
- ``put`` detaches a flight in progress: its waiters still get its result,
  but the result is not stored, so an older answer never overwrites a newer one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import cachetools
import trio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

BlockKey = tuple[str, int]
"""``(artifact checksum or id, block index)``."""


class FlightAbandoned(Exception):
    """The owner of a flight gave up without a result; the waiter should load it itself.

    Internal to the caches and the reader; never escapes them.
    """


class Flight(Generic[V]):
    """One load in progress, awaited by any number of tasks, resolved once by its owner."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: V | None = None
        self._error: Exception | None = None

    @property
    def resolved(self) -> bool:
        """True once the owner has finished, failed or abandoned the load."""
        return self._done.is_set()

    async def wait(self) -> V:
        """Wait for the load and return its value.

        Raises:
            Exception: the error the load failed with.
            FlightAbandoned: the owner gave up; load again.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set whenever no error is

    def resolve(self, value: V | None, error: Exception | None) -> None:
        """End the load with *value* or *error* and wake the waiters (the caches call this
        for their owners: ``finish``, ``fail``, ``abandon``; never twice)."""
        if self._done.is_set():
            raise RuntimeError("flight resolved twice")
        self._value = value
        self._error = error
        self._done.set()


@dataclass(frozen=True, slots=True)
class MetaCacheStats:
    """Counters of a :class:`MetaCache` since it was created."""

    hits: int
    misses: int
    joins: int
    errors: int
    entries: int


@dataclass(frozen=True, slots=True)
class _Timed(Generic[V]):
    value: V
    expires: float


def _expiry(_key: Hashable, entry: _Timed[Any], _now: float) -> float:
    return entry.expires


class MetaCache(Generic[K, V]):
    """TTL cache of listings/attributes with in-flight de-duplication (errors are not cached).

    Each entry has its own time to live, given when it is stored; ``float("inf")`` keeps it
    until it is evicted (at most *maxsize* entries, least recently used first) or replaced.
    A ttl of 0 stores nothing but still merges concurrent loads. *timer* defaults to
    ``trio.current_time`` so that ``trio.testing.MockClock`` drives expiry in tests.
    """

    def __init__(self, maxsize: int, timer: Callable[[], float] = trio.current_time) -> None:
        self._timer = timer
        self._entries: cachetools.TLRUCache[K, _Timed[V]] = cachetools.TLRUCache(
            maxsize, ttu=_expiry, timer=timer
        )
        self._flights: dict[K, Flight[V]] = {}
        self._hits = self._misses = self._joins = self._errors = 0

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]], ttl: float) -> V:
        """Return the fresh value for *key*, awaiting *load* only if no task is loading it.

        Concurrent callers for the same key share one call of *load* and its outcome; an
        error is raised to all of them and nothing is stored. If the loading task is
        cancelled, a waiting caller starts a new load.
        """
        while True:
            entry = self._entries.get(key)
            if entry is not None:
                self._hits += 1
                return entry.value
            flight = self._flights.get(key)
            if flight is None:
                break
            self._joins += 1
            try:
                return await flight.wait()
            except FlightAbandoned:
                continue
        self._misses += 1
        flight = Flight()
        self._flights[key] = flight
        try:
            value = await load()
        except Exception as exc:
            self._errors += 1
            self._land(key, flight)
            flight.resolve(None, exc)
            raise
        else:
            if self._land(key, flight):
                self._store(key, value, ttl)
            flight.resolve(value, None)
            return value
        finally:
            if not flight.resolved:  # cancelled: let a waiter load it
                self._land(key, flight)
                flight.resolve(None, FlightAbandoned())

    def expires_in(self, key: K) -> float | None:
        """Seconds the value for *key* stays fresh, or None if there is no fresh value."""
        entry = self._entries.get(key)
        return None if entry is None else entry.expires - self._timer()

    def get_nowait(self, key: K) -> V | None:
        """Return the fresh value for *key*, or None; never loads."""
        entry = self._entries.get(key)
        return None if entry is None else entry.value

    def put(self, key: K, value: V, ttl: float) -> None:
        """Store *value* for *ttl* seconds; a load in progress for *key* will not overwrite it."""
        self._flights.pop(key, None)
        self._store(key, value, ttl)

    def statistics(self) -> MetaCacheStats:
        """Return the counters."""
        return MetaCacheStats(
            hits=self._hits,
            misses=self._misses,
            joins=self._joins,
            errors=self._errors,
            entries=len(self._entries),
        )

    def _store(self, key: K, value: V, ttl: float) -> None:
        self._entries[key] = _Timed(value, self._timer() + ttl)

    def _land(self, key: K, flight: Flight[V]) -> bool:
        """Remove *flight* from the table; False if it was detached by put."""
        if self._flights.get(key) is flight:
            del self._flights[key]
            return True
        return False


@dataclass(frozen=True, slots=True)
class BlockCacheStats:
    """Counters and sizes of a :class:`BlockCache`.

    *hits*, *misses* and *joins* count :meth:`BlockCache.lookup` results (cached, absent, in
    flight). *bytes* (the kept blocks) never exceeds *max_bytes*; *peak_bytes* is the largest
    *bytes* seen. *pinned_bytes* are the pinned blocks (read ahead of their reader, bounded
    by the read-ahead budget, not by *max_bytes*), *pinned_peak* the most of them at once.
    """

    hits: int
    misses: int
    joins: int
    loads: int
    evictions: int
    entries: int
    bytes: int
    peak_bytes: int
    max_bytes: int
    pinned_bytes: int
    pinned_peak: int
    in_flight: int


class _SizedLRU(cachetools.LRUCache[BlockKey, bytes]):
    """An LRU cache that counts its evictions."""

    evictions = 0

    def popitem(self) -> tuple[BlockKey, bytes]:
        self.evictions += 1
        return super().popitem()


class BlockCache:
    """Immutable blocks of artifact content, sized in bytes: *kept* blocks, least recently
    used first out, and *pinned* ones, which nothing evicts. A block is ``bytes``, or a
    ``bytearray`` the read-ahead filled from the socket, which nothing writes to afterwards
    (read/readahead.py ``_fill_exactly``): tell a block from a flight with ``Flight``.

    A pinned block is one read ahead of its reader: whoever pins it (the read-ahead) bounds
    the pinned bytes and :meth:`unpin`\\ s it once its reader reached it (it is then kept like
    any block), so read-ahead blocks never evict each other, nor are they evicted by other
    reads, before they are read.

    Invariants: the kept bytes never exceed *max_bytes* (a block larger than that is handed
    to its waiters but not stored); a key is either kept, pinned, in flight, or absent, and
    at most one flight per key exists. The caller that :meth:`start`\\ s a flight owns it.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._lru = _SizedLRU(maxsize=max_bytes, getsizeof=len)
        self._pinned: dict[BlockKey, bytes] = {}
        self._pinned_bytes = self._pinned_peak = 0
        self._flights: dict[BlockKey, Flight[bytes]] = {}
        self._peak = 0
        self._hits = self._misses = self._joins = self._loads = 0

    def lookup(self, key: BlockKey) -> bytes | Flight[bytes] | None:
        """Return the cached block (marking a kept one recently used), its flight, or None."""
        data = self._pinned.get(key)
        if data is None:
            data = self._lru.get(key)
        if data is not None:
            self._hits += 1
            return data
        flight = self._flights.get(key)
        if flight is not None:
            self._joins += 1
            return flight
        self._misses += 1
        return None

    def contains(self, key: BlockKey) -> bool:
        """True if *key* is cached or in flight; changes neither recency nor counters."""
        return key in self._pinned or key in self._lru or key in self._flights

    def start(self, key: BlockKey) -> Flight[bytes]:
        """Register and return a new flight for *key*, which must be neither cached nor in flight.

        The caller must resolve it with :meth:`finish`, :meth:`fail` or :meth:`abandon`.
        """
        if self.contains(key):
            raise RuntimeError(f"block {key!r} is already cached or in flight")
        flight: Flight[bytes] = Flight()
        self._flights[key] = flight
        self._loads += 1
        return flight

    def finish(
        self, key: BlockKey, flight: Flight[bytes], data: bytes, *, pinned: bool = False
    ) -> None:
        """Store *data* for *key* (pinned or kept: :meth:`put`) and hand it to the flight's
        waiters."""
        self._land(key, flight)
        self.put(key, data, pinned=pinned)
        flight.resolve(data, None)

    def fail(self, key: BlockKey, flight: Flight[bytes], error: Exception) -> None:
        """Hand *error* to the flight's waiters; nothing is stored."""
        self._land(key, flight)
        flight.resolve(None, error)

    def abandon(self, key: BlockKey, flight: Flight[bytes]) -> None:
        """Give up the flight; its waiters will load the block themselves."""
        self._land(key, flight)
        flight.resolve(None, FlightAbandoned())

    def put(self, key: BlockKey, data: bytes, *, pinned: bool = False) -> None:
        """Store *data* for *key*: *pinned* (until :meth:`unpin`), or kept unless it alone
        exceeds the cache size."""
        if pinned:
            self._lru.pop(key, None)
            self._drop_pinned(key)
            self._pinned[key] = data
            self._pinned_bytes += len(data)
            self._pinned_peak = max(self._pinned_peak, self._pinned_bytes)
            return
        self._drop_pinned(key)
        if len(data) > self._max_bytes:
            return
        self._lru[key] = data
        self._peak = max(self._peak, int(self._lru.currsize))

    def unpin(self, key: BlockKey) -> None:
        """Keep the pinned block for *key* like any other (evictable) from now on; nothing
        happens if it is not pinned."""
        data = self._drop_pinned(key)
        if data is not None:
            self.put(key, data)

    def discard(self, key: BlockKey) -> None:
        """Drop the cached block for *key*, kept or pinned, if any (a flight for it is
        unaffected)."""
        self._drop_pinned(key)
        self._lru.pop(key, None)

    def statistics(self) -> BlockCacheStats:
        """Return the counters and sizes."""
        return BlockCacheStats(
            hits=self._hits,
            misses=self._misses,
            joins=self._joins,
            loads=self._loads,
            evictions=self._lru.evictions,
            entries=len(self._lru),
            bytes=int(self._lru.currsize),
            peak_bytes=self._peak,
            max_bytes=self._max_bytes,
            pinned_bytes=self._pinned_bytes,
            pinned_peak=self._pinned_peak,
            in_flight=len(self._flights),
        )

    def _drop_pinned(self, key: BlockKey) -> bytes | None:
        data = self._pinned.pop(key, None)
        if data is not None:
            self._pinned_bytes -= len(data)
        return data

    def _land(self, key: BlockKey, flight: Flight[bytes]) -> None:
        if self._flights.get(key) is not flight:
            raise RuntimeError(f"flight for block {key!r} is not registered")
        del self._flights[key]

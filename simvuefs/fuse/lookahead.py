"""Listing run directories ahead of a walker that enters them in listing order.

``find runs``, ``du``, ``ls -R`` and ``ls -l runs/*/*`` need the artifact listing of one
run after the other, in the order ``readdir`` of ``runs/`` gave them: one API round trip
each, one at a time. :class:`RunLookahead` watches which run's artifacts are needed
(:meth:`~RunLookahead.entered`) against the order of the last ``runs/`` listing
(:meth:`~RunLookahead.listed`), or the names of that listing sorted (``ls -R`` and shell
globs sort); once two runs in a row are needed in one of these orders, it lists the next
ones ahead in it, the way sequential read-ahead fetches bytes.

Invariants:

- Only a need for a run's artifacts counts, never a ``readdir``, ``lookup`` or ``stat`` of
  ``runs/`` or of a run directory: ``ls runs``, ``ls -l runs`` and ``ls -l runs/*`` cost
  the runs listing alone.
- The window (runs listed ahead of the last one needed) starts at
  :data:`FIRST_WINDOW` on the second run needed in order and doubles at each further one,
  up to *max_window*; a need out of order (a jump back, or beyond what was listed ahead)
  closes it, unless the two runs are neighbours in the other order: the window then starts
  afresh in that one. So when the walker stops, at most *max_window* runs were listed for
  nothing.
- At most *max_window* listings ahead are in flight at once (a capacity limiter), each run
  is listed ahead at most once per window (positions only advance), and every listing goes
  through the tree's ``MetaCache``: a walker that needs a run being listed ahead joins that
  request, and a run still cached is not asked for again.
- A listing ahead that fails is only logged (at DEBUG): the walker's own need asks again
  and gets the error itself.

:class:`RefreshAhead` does the same for the ``runs/`` listing in time: while it is used,
it is listed again shortly before it expires, so that a walk longer than the metadata TTL
does not wait for every runs page at each expiry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

import trio

from simvuefs.errors import SimvueError
from simvuefs.models import Run
from simvuefs.read.cache import MetaCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)

# Runs listed ahead when a second run is needed in listing order; the window doubles from
# here at each further run (2, 4, 8, 16), so a walker that stops after a few runs costs few.
FIRST_WINDOW = 2
# The default largest window, and listings ahead in flight: 16 requests in flight hide a
# 20 ms round trip behind the ~1-2 ms the daemon spends per run directory of a walk.
MAX_WINDOW = 16


class _Order:
    """The runs of ``runs/`` in one order, and each run's position in it."""

    def __init__(self, runs: list[Run]) -> None:
        self.runs = runs
        self.positions = {run.id: index for index, run in enumerate(runs)}

    def ids(self) -> list[str]:
        return [run.id for run in self.runs]

    def adjacent(self, first: str, then: str) -> bool:
        """True when run *then* comes right after run *first* in this order."""
        return self.positions[then] == self.positions[first] + 1


class RunLookahead:
    """Lists the artifacts of runs ahead of a walker that needs them in listing order.

    *load* lists one run's artifacts through the tree's caches (an error is a
    :class:`~simvuefs.errors.SimvueError`). Nothing is listed ahead before :meth:`start`
    gives a nursery for the tasks.
    """

    def __init__(
        self, load: Callable[[Run], Awaitable[object]], max_window: int = MAX_WINDOW
    ) -> None:
        self._load = load
        self._max_window = max_window
        self._limiter = trio.CapacityLimiter(max_window)
        self._nursery: trio.Nursery | None = None
        self._orders: list[_Order] = []  # readdir order, name order
        self._following = 0  # the order the walk follows
        self._last: str | None = None  # the run needed last
        self._ahead = -1  # the furthest position (in the order followed) listed ahead
        self._window = 0

    def start(self, nursery: trio.Nursery) -> None:
        """List ahead in tasks of *nursery* from now on (cancelled with it)."""
        self._nursery = nursery

    def listed(self, entries: Sequence[tuple[str, Run]]) -> None:
        """``runs/`` was read: *entries* (name, run) in the order ``readdir`` gives them.

        A walk may follow that order (``find``, ``du``) or the names sorted (``ls -R``, shell
        globs; sorted by code point, as in the C locale). A different listing (runs came or
        went) starts afresh; the same one keeps the walk's window.
        """
        if self._orders and [run.id for _, run in entries] == self._orders[0].ids():
            return
        by_name = sorted(entries, key=lambda entry: entry[0])
        self._orders = [_Order([run for _, run in entries]), _Order([run for _, run in by_name])]
        self._following, self._last, self._ahead, self._window = 0, None, -1, 0

    def entered(self, run_id: str) -> None:
        """The artifacts of run *run_id* are needed now: move the window, list ahead."""
        last = self._last
        if run_id == last or not self._orders or run_id not in self._orders[0].positions:
            return
        self._last = run_id
        if last is None:
            return
        order = self._orders[self._following]
        position, before = order.positions[run_id], order.positions[last]
        if not before < position <= max(before + 1, self._ahead):
            following = next(
                (index for index, other in enumerate(self._orders) if other.adjacent(last, run_id)),
                None,
            )
            if following is None:
                self._window, self._ahead = 0, position
                return
            self._following, order = following, self._orders[following]
            position = self._ahead = order.positions[run_id]
            self._window = 0
        self._window = min(max(2 * self._window, FIRST_WINDOW), self._max_window)
        end = min(position + self._window, len(order.runs) - 1)
        nursery = self._nursery
        if nursery is None:
            return
        for index in range(max(self._ahead, position) + 1, end + 1):
            nursery.start_soon(self._list_ahead, order.runs[index])
        self._ahead = max(self._ahead, end)

    async def _list_ahead(self, run: Run) -> None:
        async with self._limiter:
            try:
                await self._load(run)
            except Exception as exc:
                if not isinstance(exc, SimvueError):
                    log.exception("listing run %s ahead failed", run.id)
                else:
                    log.debug("listing run %s ahead failed: %s", run.id, exc)


class RefreshAhead(Generic[K, V]):
    """Lists one cached listing again in the background shortly before it expires, while
    it is used, and puts the new value in its place the moment the old one expires.

    A walk of ``runs/`` that lasts longer than the metadata TTL would otherwise wait for the
    whole runs listing (every page) each time it expires, at the kernel's next lookup there.
    When :meth:`used` finds the value of *key* in *cache* within a margin of its expiry
    (twice the last listing's duration, at least a tenth and at most half of the TTL), a
    task lists it again and, at the old value's expiry, stores the new one for a full TTL.

    So a listing in use costs one request per TTL as before, one not used costs nothing,
    and what lookups see changes only when a value expires, as without this (the kernel's
    attribute timeouts, started by the lookups that saw a value, stay in step with it); a
    value is at most the TTL plus the margin old. Only one listing runs at a time; if it
    fails (logged at DEBUG) the old value expires as it would have. A caller of :meth:`get`
    that finds the value expired while the new one is still being listed (a listing slower
    than the margin: a loaded server) waits for that listing instead of asking again, so a
    listing in use never costs two requests per TTL; it loads the value itself only when
    no listing is under way or the one under way failed.
    """

    def __init__(self, cache: MetaCache[K, V], key: K, load: Callable[[], Awaitable[V]]) -> None:
        self._cache = cache
        self._key = key
        self._load = load
        self._nursery: trio.Nursery | None = None
        self._running: trio.Event | None = None  # set when the listing under way is over
        self._took = 0.0  # seconds the last listing took

    def start(self, nursery: trio.Nursery) -> None:
        """Refresh in tasks of *nursery* from now on (cancelled with it)."""
        self._nursery = nursery

    async def get(self, ttl: float) -> V:
        """The value: cached, else the one being listed again (waited for), else loaded
        through the cache (a listing of *ttl* seconds); then :meth:`used`."""
        running = self._running
        if running is not None and self._cache.get_nowait(self._key) is None:
            await running.wait()
        value = await self._cache.get_or_load(self._key, self._load, ttl)
        self.used(ttl)
        return value

    def used(self, ttl: float) -> None:
        """The value was just used; list it again if it expires within the margin."""
        left = self._cache.expires_in(self._key)
        if self._nursery is None or self._running is not None or left is None:
            return
        if left <= min(ttl / 2, max(ttl / 10, 2 * self._took)):
            self._running = trio.Event()
            self._nursery.start_soon(self._refresh, ttl, self._running)

    async def _refresh(self, ttl: float, running: trio.Event) -> None:
        try:
            began = trio.current_time()
            value = await self._load()
            self._took = trio.current_time() - began
            await trio.sleep(max(self._cache.expires_in(self._key) or 0.0, 0.0))
            self._cache.put(self._key, value, ttl)
        except Exception as exc:
            if not isinstance(exc, SimvueError):
                log.exception("listing %r again failed", self._key)
            else:
                log.debug("listing %r again failed: %s", self._key, exc)
        finally:
            self._running = None
            running.set()

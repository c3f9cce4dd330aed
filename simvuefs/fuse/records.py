"""Artifact records kept from one listing of a directory to the next.

Why (docs/reliability.md "Memory and files written"): a directory is listed again at each
metadata TTL, and each listing decoded a new record per artifact (its id, name, path,
checksum, timestamp, download URL) to replace the record of the listing before. A directory
of 10,000 artifacts in use so re-made 10,000 long-lived records every second, first beside
the old ones (the peak of each listing), then scattered over the heap between the objects
made meanwhile (nodes, keys): freed blocks that the allocator cannot give back.
:class:`ListedRecords` hands each listing the records of the one before (``known``, for
``SimvueBackend.list_artifacts``, which returns the known record of every entry that did
not change, as it decodes them), so only new and changed artifacts make new records.

Invariants: a record is reused only when every field but ``url`` is equal (the server signs
a new download URL for each listing; ``Artifact.same_but_url``). All records are taken
fresh once those kept are :data:`RENEW_AFTER` seconds old, so a listing never hands out a
download URL older than that (S3 presigned URLs usually live an hour; an expired one costs a
refresh, ``SimvueClient``). What is kept for a directory is dropped when no listing followed
within twice its time to live plus :data:`KEEP_GRACE`: records are kept only for
directories listed again and again, for as long as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import cachetools
import trio

from simvuefs.models import Artifact

RENEW_AFTER = 600.0
"""Seconds: records (and their download URLs) kept longer are replaced by fresh ones."""
KEEP_GRACE = 5.0
"""Seconds a directory's records are kept beyond twice its listing's time to live."""


@dataclass(frozen=True, slots=True)
class _Kept:
    records: tuple[Artifact, ...]
    since: float  # when the oldest of them was listed
    until: float  # when to let go of them unless listed again


def _until(_key: Hashable, kept: _Kept, _now: float) -> float:
    return kept.until


class ListedRecords:
    """The records of the last listing of each directory, for the next one to reuse.

    Keys are whatever names a listing (``(run id, category)``). At most *maxsize* listings
    are kept, least recently listed dropped first. *timer* as for ``MetaCache``.
    """

    def __init__(self, maxsize: int, timer: Callable[[], float] = trio.current_time) -> None:
        self._timer = timer
        self._kept: cachetools.TLRUCache[Hashable, _Kept] = cachetools.TLRUCache(
            maxsize, ttu=_until, timer=timer
        )

    def known(self, key: Hashable) -> Mapping[str, Artifact]:
        """The records of the last listing of *key* by id, for the next listing to reuse;
        empty when there is none or they are due to be renewed (module docstring)."""
        kept = self._kept.get(key)
        if kept is None:
            return {}
        if self._timer() - kept.since >= RENEW_AFTER:
            del self._kept[key]
            return {}
        return {record.id: record for record in kept.records}

    def keep(self, key: Hashable, records: list[Artifact], ttl: float) -> None:
        """Remember *records*, just listed for *key* (reusing :meth:`known`'s) and trusted
        for *ttl* seconds, for the next listing of *key*."""
        if math.isinf(ttl):  # never listed again while cached: nothing to keep them for
            return
        now = self._timer()
        kept = self._kept.get(key)
        since = now if kept is None else kept.since
        self._kept[key] = _Kept(tuple(records), since, now + 2 * ttl + KEEP_GRACE)

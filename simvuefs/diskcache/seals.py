"""SealBook: when this process may seal a content (write which parts hold its verified bytes).

A *seal* (``store.Seal``) names parts that tile a content and whose concatenation matched
the content's SHA-256. Reads of a sealed content (``sealed.SealedRead``) then take bytes
only from those parts, each checked against the CRC in its name (on disk, or fetched again),
and need not hash the whole content again: the check a disk-warm read paid most for.

The seal must name exactly the bytes a reader verified. A reader gets the bytes of this
process's :class:`~simvuefs.diskcache.source.CachingSource` (through the block cache), and
every byte that source hands out comes either from a part on disk (CRC checked) or from a
fetch that is then stored as a part whose CRC is computed over those very bytes. So the
book records, per content, from the first byte handed out on:

- the parts whose bytes were handed out (read from disk, or stored from a fetch);
- the fetched bytes handed out and not yet stored (*unstored*);
- whether fetched bytes were handed out that were never stored (*tainted*: a skipped or
  failed store, a read-only cache), or the content failed verification.

Once a reader verified the content (:meth:`SealBook.verified`), no fetched bytes wait for
their store, it is not tainted and its recorded parts tile the content without overlap,
each position was handed out from exactly one part, the one the reader got: those parts are
the seal (:meth:`SealBook.ready`). Any doubt (overlapping parts, a store that did not
happen) means no seal, never a wrong one.

Invariant: a content has a record from the first byte this process hands out for it, for
as long as the process lives (a record dropped and made again could miss bytes still held
in the block cache). So the book is bounded by refusing: past :data:`MAX_RECORDS` contents
or :data:`MAX_PARTS` recorded parts it stops sealing for the rest of the process. A sealed
content's record keeps no parts. Trio thread only; no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from simvuefs.diskcache.store import Part, Seal, tiles

log = logging.getLogger(__name__)

MAX_RECORDS = 16384
"""Contents recorded before the process stops sealing (a record is a few hundred bytes)."""
MAX_PARTS = 65536
"""Parts recorded (of contents not sealed yet) before the process stops sealing: 256 GiB of
content read in part, a few MiB of memory."""


@dataclass
class _Record:
    parts: dict[str, Part] = field(default_factory=dict)
    unstored: int = 0
    tainted: bool = False
    sealed: bool = False
    verified_size: int | None = None


class SealBook:
    """Where the bytes this process handed out for each content came from (module docstring)."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}
        self._parts = 0
        self._enabled = True

    def _record(self, sha: str) -> _Record | None:
        if not self._enabled:
            return None
        record = self._records.get(sha)
        if record is None:
            if len(self._records) >= MAX_RECORDS:
                self._disable("contents")
                return None
            record = self._records[sha] = _Record()
        return record

    def _disable(self, what: str) -> None:
        log.debug("content cache: too many %s recorded, no more seals in this process", what)
        self._enabled = False
        self._records.clear()

    def served(self, sha: str, part: Part) -> None:
        """Bytes of *part*, read from disk, were handed out."""
        record = self._record(sha)
        if record is None or record.sealed or part.name in record.parts:
            return
        record.parts[part.name] = part
        self._parts += 1
        if self._parts > MAX_PARTS:
            self._disable("parts")

    def fetched(self, sha: str, size: int) -> None:
        """*size* fetched bytes were handed out; they are stored (:meth:`stored`) or not
        (:meth:`not_stored`) later."""
        record = self._record(sha)
        if record is not None:
            record.unstored += size

    def stored(self, sha: str, size: int, parts: list[Part]) -> None:
        """*size* fetched bytes were stored as *parts*."""
        record = self._records.get(sha)
        if record is None:
            return
        record.unstored -= size
        for part in parts:
            self.served(sha, part)

    def not_stored(self, sha: str, size: int) -> None:
        """*size* fetched bytes were handed out and will never be stored."""
        record = self._records.get(sha)
        if record is not None:
            record.unstored -= size
            record.tainted = True

    def taint(self, sha: str) -> None:
        """The content failed verification: never seal it in this process."""
        record = self._record(sha)
        if record is not None:
            record.tainted = True

    def verified(self, sha: str, size: int) -> None:
        """A reader checked the content (*size* bytes) against its SHA-256."""
        record = self._records.get(sha)
        if record is not None and not record.sealed:
            record.verified_size = size

    def ready(self, sha: str) -> Seal | None:
        """The seal of *sha* if it can be written now (then never again in this process)."""
        record = self._records.get(sha)
        if (
            record is None
            or record.sealed
            or record.tainted
            or record.unstored
            or record.verified_size is None
        ):
            return None
        parts = sorted(record.parts.values(), key=lambda p: p.start)
        if not tiles(parts, record.verified_size):
            return None
        record.sealed = True
        self._parts -= len(record.parts)
        record.parts = {}
        return Seal(record.verified_size, tuple(parts))

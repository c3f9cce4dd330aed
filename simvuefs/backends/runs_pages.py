"""Pages of the runs listing, decoded once however often they are fetched.

While ``runs/`` is in use it is listed again every metadata TTL (``fuse/lookahead.py``
``RefreshAhead``): a ``find`` over 1,000 runs lists its 11 pages every second, and decoding
their JSON into :class:`~simvuefs.models.Run` records was about 40 % of the daemon's CPU for
each such listing (52 ms against 31 ms with this), although the pages rarely change.
:class:`RunsPageMemo` keeps the last answer to each page request: an answer whose bytes are
the same as last time is the same page, and its decoded form is used again.

Invariants:

- A page is reused only for the same request (its query: filters and ``start``) and a
  byte-identical body; any change in the answer (a run's status, a new run shifting the
  page) decodes it afresh, so what callers get is exactly what decoding the answer gives.
- One entry per distinct request, the last answer to it: for one mount's listing that is
  one entry per page of ``runs/`` (memory: one listing's bodies and records).
- :class:`RunsPage` values are immutable (their runs are frozen records), so sharing one
  between listings is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from simvuefs.models import Run


@dataclass(frozen=True, slots=True)
class RunsPage:
    """One decoded page of ``GET /api/runs``."""

    runs: tuple[Run, ...]
    """The page's well-formed entries, in order (malformed ones skipped, with a warning)."""
    ids: frozenset[str]
    """The ``id`` of every entry that has one, malformed entries included."""
    length: int
    """How many entries the page held."""
    total: object
    """The page's ``count`` as the server sent it (the total number of matches)."""
    what: str
    """The request, for messages."""


class RunsPageMemo:
    """The last answer to each runs page request and its decoded :class:`RunsPage`."""

    def __init__(self) -> None:
        self._pages: dict[Hashable, tuple[bytes, RunsPage]] = {}

    def decoded(self, request: Hashable, body: bytes, decode: Callable[[], RunsPage]) -> RunsPage:
        """The page answered *body* to *request*: the last one if *body* is unchanged, else
        ``decode()`` (remembered; an error it raises is passed on, nothing remembered)."""
        known = self._pages.get(request)
        if known is not None and known[0] == body:
            return known[1]
        page = decode()
        self._pages[request] = (body, page)
        return page

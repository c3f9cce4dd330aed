"""What every route of the devserver shares: options, store, secret, faults and counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from simvuefs.devserver.faults import Faults
from simvuefs.devserver.store import DEFAULT_USER, Store

SERVER_VERSION = "1.3.0"
"""Version reported by ``GET /api/version`` (the official client wants 1.1.0 <= v < 2.0.0)."""

NOSIM_VERSION = "1.0.0"
"""Version reported by ``GET /api/nosim/version`` (stored by the client, never used)."""

USER_NAME = DEFAULT_USER
"""The default user: the subject of the ``--write-config`` token and the owner of seeded
runs (``POST /admin/tokens`` mints tokens for other users: ``sharing.py``)."""


@dataclass
class Stats:
    """Traffic counters read by ``GET /admin/stats`` (in memory; a restart resets them).

    ``bytes_served`` counts storage GET body bytes handed to the connection, ``uploads`` the
    storage uploads received completely and stored (rejected ones are ``uploads_rejected``).
    """

    bytes_served: int = 0
    storage_gets: int = 0
    range_gets: int = 0
    uploads: int = 0
    upload_bytes: int = 0
    uploads_rejected: int = 0
    api_requests: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as JSON-ready data."""
        return {
            "bytes_served": self.bytes_served,
            "storage_gets": self.storage_gets,
            "range_gets": self.range_gets,
            "uploads": self.uploads,
            "upload_bytes": self.upload_bytes,
            "uploads_rejected": self.uploads_rejected,
            "api_requests": dict(self.api_requests),
        }


@dataclass
class ServerState:
    """Shared by all routes; lives as long as the server process."""

    store: Store
    secret: bytes
    upload_style: str = "post"
    url_expiry: float = 3600.0
    storage_url: str = ""
    """Base URL of an external server of the blob directory for downloads ("" = our own)."""
    dedup: bool = True
    max_upload_size: int = 0
    """Storage refuses uploads larger than this with S3's 400 EntityTooLarge (0 = no limit)."""
    realistic: bool = False
    """``--realistic``: behave as the real server is believed to, where it differs from the
    lenient default (docs/architecture.md, devserver section, lists what this turns on)."""
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)

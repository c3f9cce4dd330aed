"""Live counters of a mount, published for ``simvuefs status``.

While a mount serves, :meth:`MountStats.publish` hands the counters of each source to
:func:`simvuefs.control.counters.publish` every :data:`PUBLISH_INTERVAL` seconds (which owns
the file's path and format), and withdraws them when the mount ends. The sources are
``client`` (requests, retries, bytes) or ``offline``, ``reader`` (with its block ``cache``),
``content_cache`` (the cache on disk, with its directory) and ``uploads``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from simvuefs.backends.protocol import SimvueBackend
from simvuefs.control import counters
from simvuefs.diskcache.source import CachingSource
from simvuefs.read.reader import Reader
from simvuefs.write.upload import Uploader

PUBLISH_INTERVAL = 2.0
"""Seconds between two writes of the stats file."""


@dataclass
class MountStats:
    """Where the counters of one mount come from; *uploader* is set once it is open."""

    mountpoint: Path
    backend: SimvueBackend
    reader: Reader
    content: CachingSource | None = None
    uploader: Uploader | None = None

    def sources(self) -> dict[str, dict[str, Any]]:
        """Return the counters of each source, by source name."""
        data: dict[str, dict[str, Any]] = {}
        name, backend_counters = self.backend.counters()
        data[name] = backend_counters
        data["reader"] = dataclasses.asdict(self.reader.statistics())
        if self.content is not None:
            data["content_cache"] = self.content.counters()
        if self.uploader is not None:
            data["uploads"] = dataclasses.asdict(self.uploader.statistics())
        return data

    async def publish(self, interval: float = PUBLISH_INTERVAL) -> None:
        """Publish the counters every *interval* seconds until cancelled, then withdraw them."""
        try:
            while True:
                await trio.to_thread.run_sync(counters.publish, self.mountpoint, self.sources())
                await trio.sleep(interval)
        finally:
            # One unlink of a small local file at the end of the mount: no need for a thread.
            counters.withdraw(self.mountpoint)

"""Live counters of a mount, published for ``simvuefs status``.

While a mount serves, :meth:`MountStats.publish` rewrites
``$XDG_STATE_HOME/simvuefs/stats/<key>.json`` (``registry.stats_path``) every
:data:`PUBLISH_INTERVAL` seconds, atomically (a temporary file renamed over the old one),
and deletes it when the mount ends. The file holds the mount point, the daemon's pid, the
time of writing and one object of counters per source: ``client`` (requests, retries,
bytes) or ``offline``, ``reader`` (with its block ``cache``) and ``uploads``. Counters only:
never the token, a URL or a file name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from simvuefs.backends.client import SimvueClient
from simvuefs.backends.offline import OfflineClient
from simvuefs.backends.protocol import SimvueBackend
from simvuefs.control import registry
from simvuefs.read.reader import Reader
from simvuefs.write.upload import Uploader

log = logging.getLogger(__name__)

PUBLISH_INTERVAL = 2.0
"""Seconds between two writes of the stats file."""


@dataclass
class MountStats:
    """Where the counters of one mount come from; *uploader* is set once it is open."""

    mountpoint: Path
    backend: SimvueBackend
    reader: Reader
    uploader: Uploader | None = None

    def snapshot(self) -> dict[str, Any]:
        """Return the JSON object written to the stats file."""
        data: dict[str, Any] = {
            "mountpoint": str(self.mountpoint),
            "pid": os.getpid(),
            "updated": time.time(),
        }
        if isinstance(self.backend, SimvueClient):
            data["client"] = dataclasses.asdict(self.backend.statistics())
        elif isinstance(self.backend, OfflineClient):
            data["offline"] = dataclasses.asdict(self.backend.statistics())
        data["reader"] = dataclasses.asdict(self.reader.statistics())
        if self.uploader is not None:
            data["uploads"] = dataclasses.asdict(self.uploader.statistics())
        return data

    async def publish(self, interval: float = PUBLISH_INTERVAL) -> None:
        """Write the stats file every *interval* seconds until cancelled, then delete it."""
        path = registry.stats_path(self.mountpoint)
        try:
            while True:
                await trio.to_thread.run_sync(write, path, self.snapshot())
                await trio.sleep(interval)
        finally:
            # One unlink of a small local file at the end of the mount: no need for a thread.
            path.unlink(missing_ok=True)


def write(path: Path, data: dict[str, Any]) -> None:
    """Replace *path* with *data* as JSON atomically; errors are logged (stats are optional)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        log.debug("cannot write the stats file %s: %s", path, exc.strerror or exc)


def load(mountpoint: Path) -> dict[str, Any] | None:
    """Return the counters of the live mount at *mountpoint*, or None if it publishes none
    (no file, unreadable, or its daemon is gone)."""
    return _read(registry.stats_path(mountpoint))


def load_all() -> list[dict[str, Any]]:
    """Return the counters of every live mount of this user, sorted by mount point."""
    directory = registry.stats_dir()
    if not directory.is_dir():
        return []
    found = [_read(path) for path in directory.glob("*.json")]
    return sorted((s for s in found if s is not None), key=lambda s: str(s["mountpoint"]))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        alive = isinstance(data, dict) and registry.simvuefs_running(int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if alive else None


def describe(data: dict[str, Any]) -> str:
    """The counters as text, one indented line per source (nested objects flattened)."""
    age = max(0.0, time.time() - float(data.get("updated", 0)))
    lines = [f"  counters (updated {age:.0f} s ago):\n"]
    for section, counters in data.items():
        if isinstance(counters, dict):
            lines.append(f"    {section}: {_flatten(counters)}\n")
    return "".join(lines)


def _flatten(counters: dict[str, Any], prefix: str = "") -> str:
    parts = []
    for name, value in counters.items():
        if isinstance(value, dict):
            parts.append(_flatten(value, f"{prefix}{name}."))
        else:
            parts.append(f"{prefix}{name} {value}")
    return ", ".join(parts)

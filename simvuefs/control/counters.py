"""The counters file of a live mount: where it is, what it holds, how it is read and shown.

While a mount serves, its daemon (``fuse/stats.py``) calls :func:`publish` every few
seconds, and :func:`withdraw` when the mount ends; ``simvuefs status`` reads the file with
:func:`load` / :func:`load_all` and shows it with :func:`describe`. This module is the one
place that knows the file's path and format.

The file is ``$XDG_STATE_HOME/simvuefs/stats/<key of the mount point>.json``, one JSON
object: ``mountpoint``, the daemon's ``pid``, the time it was ``updated`` (epoch seconds)
and one object of counters per source (``client`` or ``offline``, ``reader`` with its
``cache``, ``uploads``), whose values are numbers or nested objects of numbers. Counters
only: never the token, a URL or a file name.

Invariants: the file is replaced atomically (a reader sees the old or the new object,
never a mix); a file whose pid is not a running simvuefs process is a leftover of a
daemon that died and is never shown.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from simvuefs.config import path_key
from simvuefs.control.registry import simvuefs_running, state_dir
from simvuefs.localio import write_atomically

log = logging.getLogger(__name__)


def stats_dir() -> Path:
    """Where live mounts publish their counters."""
    return state_dir() / "stats"


def stats_path(mountpoint: Path) -> Path:
    """Return where the mount at *mountpoint* publishes its counters."""
    return stats_dir() / f"{path_key(str(mountpoint))}.json"


def publish(mountpoint: Path, sources: dict[str, dict[str, Any]]) -> None:
    """Replace the counters file of *mountpoint* with *sources* (counters by source name),
    as published now by this process; errors are logged (the counters are optional)."""
    path = stats_path(mountpoint)
    data = {"mountpoint": str(mountpoint), "pid": os.getpid(), "updated": time.time()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({**data, **sources}).encode("utf-8"), durable=False)
    except OSError as exc:
        log.debug("cannot write the stats file %s: %s", path, exc.strerror or exc)


def withdraw(mountpoint: Path) -> None:
    """Delete the counters file of *mountpoint* (its mount ends)."""
    stats_path(mountpoint).unlink(missing_ok=True)


def load(mountpoint: Path) -> dict[str, Any] | None:
    """Return the counters of the live mount at *mountpoint*, or None if it publishes none
    (no file, unreadable, or its daemon is gone)."""
    return _read(stats_path(mountpoint))


def load_all() -> list[dict[str, Any]]:
    """Return the counters of every live mount of this user, sorted by mount point."""
    directory = stats_dir()
    if not directory.is_dir():
        return []
    found = [_read(path) for path in directory.glob("*.json")]
    return sorted((s for s in found if s is not None), key=lambda s: str(s["mountpoint"]))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        alive = isinstance(data, dict) and simvuefs_running(int(data["pid"]))
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

"""How much the content cache holds, and eviction (least recently used first).

Used by the mounts (after they stored enough, in a worker thread) and by ``simvuefs cache``
/ ``simvuefs cache clean`` (host side: this module imports only the standard library and
``store``). Eviction removes whole entries, oldest use record first, until the directory
is at most the size asked for; several processes may evict at once (each removal is
idempotent, at worst a little more than needed goes). Removing an entry someone reads is
safe (``store`` module docstring). Temporary files and claims of dead processes are
removed too.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from simvuefs.diskcache.store import (
    CLAIM_PREFIX,
    CLAIM_STALE,
    LAYOUT,
    TEMP_PREFIX,
    TEMP_STALE,
    USE_RECORD,
    Part,
)


@dataclass(frozen=True)
class EntryUsage:
    """One entry: its directory, bytes in parts, number of parts, last use (epoch s)."""

    path: Path
    size: int
    parts: int
    used: float


@dataclass(frozen=True)
class Usage:
    """The whole cache: bytes in parts, entries, parts."""

    size: int
    entries: int
    parts: int


def scan(root: Path, *, tidy: bool = False) -> list[EntryUsage]:
    """Every entry under *root*; with *tidy*, stale temporary files and claims go."""
    found = []
    now = time.time()
    objects = root / LAYOUT
    try:
        shards = list(os.scandir(objects))
    except FileNotFoundError:
        return []
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(shard.path))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                found.append(_entry_usage(Path(entry.path), now, tidy))
    return found


def _entry_usage(path: Path, now: float, tidy: bool) -> EntryUsage:
    size = parts = 0
    used = 0.0
    try:
        files = list(os.scandir(path))
    except FileNotFoundError:
        files = []
    for file in files:
        try:
            info = file.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if Part.parse(file.name) is not None:
            size += info.st_size
            parts += 1
            used = max(used, info.st_mtime)
        elif file.name == USE_RECORD:
            used = max(used, info.st_mtime)
        elif tidy and _stale(file.name, now - info.st_mtime):
            Path(file.path).unlink(missing_ok=True)
    return EntryUsage(path, size, parts, used)


def _stale(name: str, age: float) -> bool:
    if name.startswith(TEMP_PREFIX):
        return age > TEMP_STALE
    return name.startswith(CLAIM_PREFIX) and age > CLAIM_STALE


def measure(root: Path) -> Usage:
    """The size and counts of the cache at *root*."""
    entries = scan(root)
    return Usage(sum(e.size for e in entries), len(entries), sum(e.parts for e in entries))


def evict(root: Path, max_size: int) -> tuple[int, int]:
    """Remove the least recently used entries until the cache holds at most *max_size*
    bytes; return ``(entries removed, bytes removed)``."""
    entries = sorted(scan(root, tidy=True), key=lambda e: e.used)
    total = sum(e.size for e in entries)
    removed = freed = 0
    for entry in entries:
        if total <= max_size:
            break
        shutil.rmtree(entry.path, ignore_errors=True)
        total -= entry.size
        removed += 1
        freed += entry.size
    return removed, freed

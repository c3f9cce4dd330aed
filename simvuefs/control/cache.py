"""``simvuefs cache`` and ``simvuefs cache clean``: the content cache seen from the host.

Which directories: ``--cache-dir DIR``, else every cache directory a running mount of this
user publishes in its counters file (``counters.py``, section ``content_cache``). Size and
entries are measured on disk (``diskcache.usage``); hit and miss counters are those of the
running mounts of this machine that use the directory (mounts on other machines sharing
it are not seen). ``clean`` evicts least recently used entries down to ``--max-size``
(default 0: everything), while mounts keep using the cache (``diskcache.store``: removal
is safe for readers). Never loads pyfuse3 or httpx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simvuefs.config import format_size
from simvuefs.control import counters
from simvuefs.diskcache.usage import evict, measure
from simvuefs.logs import UsageError

SECTION = "content_cache"
"""The counters section a mount with a content cache publishes."""


def _users() -> dict[Path, list[dict[str, Any]]]:
    """The live mounts of this user with a content cache, by cache directory."""
    found: dict[Path, list[dict[str, Any]]] = {}
    for data in counters.load_all():
        section = data.get(SECTION)
        if isinstance(section, dict) and isinstance(section.get("dir"), str):
            found.setdefault(Path(section["dir"]), []).append(data)
    return found


def directories(cache_dir: Path | None) -> list[Path]:
    """*cache_dir*, or those of the running mounts; UsageError when there is none."""
    if cache_dir is not None:
        return [cache_dir]
    found = sorted(_users())
    if not found:
        raise UsageError("no running mount uses a content cache: name one with --cache-dir DIR")
    return found


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size} bytes ({size / 2**20:.1f} MiB)"


def describe(cache_dir: Path | None) -> str:
    """``simvuefs cache``: size, entries and the counters of the mounts using each cache."""
    users = _users()
    text = ""
    for directory in directories(cache_dir):
        if not directory.is_dir():
            text += f"content cache {directory}: does not exist\n"
            continue
        usage = measure(directory)
        text += (
            f"content cache {directory}: {_size(usage.size)} in {usage.entries} entries "
            f"({usage.parts} parts)\n"
        )
        mounts = users.get(directory, [])
        if not mounts:
            text += "  no running mount of this machine uses it\n"
        for data in mounts:
            section = data[SECTION]
            limit = int(section.get("size_limit", 0))
            hits, misses = int(section.get("hit_bytes", 0)), int(section.get("miss_bytes", 0))
            shown = ", ".join(f"{name} {value}" for name, value in section.items() if name != "dir")
            text += (
                f"  {data['mountpoint']} (pid {data['pid']}, size limit "
                f"{format_size(limit)}): {_size(hits)} from the cache, {_size(misses)} "
                f"from the server\n    {shown}\n"
            )
    return text


def clean(cache_dir: Path | None, max_size: int) -> str:
    """``simvuefs cache clean``: evict down to *max_size* bytes; say what went."""
    text = ""
    for directory in directories(cache_dir):
        if not directory.is_dir():
            raise UsageError(f"{directory} does not exist")
        entries, freed = evict(directory, max_size)
        left = measure(directory)
        text += (
            f"content cache {directory}: removed {entries} entries ({_size(freed)}); "
            f"{_size(left.size)} in {left.entries} entries left\n"
        )
    return text

"""Mount records: which spool holds the uploads of which mount point.

``simvuefs status MOUNTPOINT`` must find the pending uploads of a mount, also once its
daemon is gone (after a crash, or an unmount that left uploads pending). So every writable
mount records itself in ``$XDG_STATE_HOME/simvuefs/mounts/<key>.json`` (default
``~/.local/state/simvuefs/mounts``): the mount point, the daemon's pid, the server URL and
the spool directory. The record is written when the spool is open and removed at unmount
when nothing is left pending; a record whose pid no longer runs means "not mounted".

Each mount point gets its own spool by default, ``$XDG_CACHE_HOME/simvuefs/spool/<key>``
with *key* derived from the server URL and the mount point: two mounts never share a spool
(its lock would refuse the second), uploads pending for one server are never offered to
another, and mounting the same server at the same place again resumes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from simvuefs.write.spool import default_spool_dir

log = logging.getLogger(__name__)

KEY_LENGTH = 16
"""Hex digits of the sha256 that name a spool or a record (collisions are irrelevant)."""


def state_dir() -> Path:
    """Return ``$XDG_STATE_HOME/simvuefs``, or ``~/.local/state/simvuefs``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "simvuefs"


def records_dir() -> Path:
    """Where mount records live."""
    return state_dir() / "mounts"


def stats_dir() -> Path:
    """Where live mounts publish their counters (``stats.py``)."""
    return state_dir() / "stats"


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:KEY_LENGTH]


def default_spool(url: str, mountpoint: Path) -> Path:
    """Return the spool directory a mount of *url* at *mountpoint* uses by default."""
    return default_spool_dir() / _key(url, str(mountpoint))


def record_path(mountpoint: Path) -> Path:
    """Return where the record of the mount at *mountpoint* is kept."""
    return records_dir() / f"{_key(str(mountpoint))}.json"


def stats_path(mountpoint: Path) -> Path:
    """Return where the mount at *mountpoint* publishes its counters."""
    return stats_dir() / f"{_key(str(mountpoint))}.json"


def simvuefs_running(pid: int) -> bool:
    """True when *pid* is a running simvuefs process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"simvuefs" in cmdline.read()
    except OSError:
        return False


@dataclass(frozen=True)
class MountRecord:
    """One mount: *mountpoint*, its daemon's *pid*, the server *url* (the API base) and the
    *spool_dir* holding its uploads."""

    mountpoint: str
    pid: int
    url: str
    spool_dir: str

    def daemon_running(self) -> bool:
        """True when the recorded pid is a running simvuefs process."""
        return simvuefs_running(self.pid)


def save(record: MountRecord) -> None:
    """Write *record* (replacing an older one for the same mount point); errors are logged,
    they only make ``simvuefs status`` less helpful."""
    path = record_path(Path(record.mountpoint))
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(asdict(record), indent=1), encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        log.warning("cannot record the mount in %s: %s", path, exc.strerror or exc)


def remove(mountpoint: Path) -> None:
    """Delete the record of *mountpoint*, if any."""
    record_path(mountpoint).unlink(missing_ok=True)


def load(mountpoint: Path) -> MountRecord | None:
    """Return the record of *mountpoint*, or None if there is none (or it is unreadable)."""
    return _read(record_path(mountpoint))


def load_all() -> list[MountRecord]:
    """Return every readable record, sorted by mount point."""
    directory = records_dir()
    if not directory.is_dir():
        return []
    found = [_read(path) for path in directory.glob("*.json")]
    return sorted((r for r in found if r is not None), key=lambda r: r.mountpoint)


def _read(path: Path) -> MountRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return MountRecord(
            mountpoint=str(data["mountpoint"]),
            pid=int(data["pid"]),
            url=str(data["url"]),
            spool_dir=str(data["spool_dir"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("skipping unreadable mount record %s: %s", path, exc)
        return None


def remove_empty_spool(spool_dir: Path) -> bool:
    """Delete *spool_dir* if it holds nothing but its lock and empty subdirectories (no
    pending, staged or abandoned file); return True if it is gone."""
    try:
        for sub in ("staging", "pending", "landed", "abandoned"):
            path = spool_dir / sub
            if path.is_dir() and any(path.iterdir()):
                return False
        for sub in ("staging", "pending", "landed", "abandoned"):
            (spool_dir / sub).rmdir()
        (spool_dir / "lock").unlink(missing_ok=True)
        spool_dir.rmdir()
    except OSError as exc:
        log.debug("kept the spool %s: %s", spool_dir, exc)
        return False
    return True

"""Mount records: which spool holds the uploads of which mount point.

``simvuefs status MOUNTPOINT`` must find the pending uploads of a mount, also once its
daemon is gone (after a crash, or an unmount that left uploads pending). So every writable
mount records itself in ``$XDG_STATE_HOME/simvuefs/mounts/<key>.json`` (default
``~/.local/state/simvuefs/mounts``): the mount point, the daemon's pid, the server URL and
the spool directory (``Settings.spool_dir``: which spool a mount uses is decided in
``config.py``). The record is written when the spool is open and removed at unmount when
nothing is left pending; a record whose pid no longer runs means "not mounted".
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from simvuefs.config import path_key
from simvuefs.localio import write_atomically

log = logging.getLogger(__name__)


def state_dir() -> Path:
    """Return ``$XDG_STATE_HOME/simvuefs``, or ``~/.local/state/simvuefs``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "simvuefs"


def records_dir() -> Path:
    """Where mount records live."""
    return state_dir() / "mounts"


def record_path(mountpoint: Path) -> Path:
    """Return where the record of the mount at *mountpoint* is kept."""
    return records_dir() / f"{path_key(str(mountpoint))}.json"


def simvuefs_running(pid: int) -> bool:
    """True when *pid* is a running simvuefs mount process: ``simvuefs mount ...`` or
    ``python -m simvuefs mount ...`` (the program, or the module, named exactly; a process
    that merely runs from a directory called simvuefs, such as a test runner, is not one)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
    except OSError:
        return False
    programs = {os.path.basename(arg) for arg in argv[:3]}
    return bool(programs & {b"simvuefs", b"mount.simvuefs"}) and b"mount" in argv


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
    data = json.dumps(asdict(record), indent=1).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data, durable=False)
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

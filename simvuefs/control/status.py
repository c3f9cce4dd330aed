"""``simvuefs status``: what a mount has not uploaded yet, and what a live mount has done.

Reads the mount records (``registry.py``), the counters live mounts publish
(``counters.py``), the mount table (``mounts.py``), the journal (``spool.read_pending``)
and the change log of what was replaced and deleted (``write/changes.py``)
without locking anything, so it works while the mount runs, after it crashed and after an
unmount that left uploads pending. Every function returns the text to print.

Without a mount point, only mounts that matter are listed: those whose daemon runs, dead
mounts still in the mount table, and those whose spool still holds files (pending uploads,
or files that can never be uploaded); the records of mounts that ended with nothing left
(killed, say) are not shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simvuefs.config import MIB
from simvuefs.control import counters, registry
from simvuefs.control.mounts import mount_table
from simvuefs.write import changes
from simvuefs.write.spool import JournalRecord, read_pending

RECENT_CHANGES = 20
"""How many of the spool's last replacements and deletes ``status`` shows."""


def _size(size: int) -> str:
    if size < MIB:
        return f"{size} bytes"
    return f"{size} bytes ({size / MIB:.1f} MiB)"


def describe_upload(record: JournalRecord) -> str:
    """Two lines about one pending upload: what and where, then why it is not there yet
    (for a final refusal, the server's message and what to do)."""
    if record.checkpoint:
        return (
            f"  run {record.run_id}: {record.category}/{record.name}, still being written: "
            f"{_size(record.size)} kept at its last fsync, "
            f"{record.created:%Y-%m-%d %H:%M:%S} UTC\n"
        )
    attempts = f"{record.attempts} failed attempt(s)" if record.attempts else "no attempt failed"
    lines = [
        f"  run {record.run_id}: {record.category}/{record.name}, {_size(record.size)}, "
        f"{attempts}, stage {record.stage}, since {record.created:%Y-%m-%d %H:%M:%S} UTC\n"
    ]
    if record.failed:
        lines.append(
            f"    FAILED ({record.failed}), not retried: {record.last_error}\n"
            "    ('simvuefs pending retry' tries again; 'simvuefs pending export DIR' copies "
            "it out; 'simvuefs pending drop' forgets it)\n"
        )
    elif record.last_error:
        lines.append(f"    last error: {record.last_error}\n")
    return "".join(lines)


def describe_spool(spool_dir: Path) -> str:
    """The pending uploads of the spool at *spool_dir* (and files it could not upload)."""
    if not spool_dir.is_dir():
        return f"spool {spool_dir}: does not exist (nothing pending)\n"
    records = read_pending(spool_dir)
    failed = sum(1 for record in records if record.failed)
    text = f"spool {spool_dir}: {len(records)} pending upload(s)"
    text += f", {failed} failed\n" if failed else "\n"
    text += "".join(describe_upload(record) for record in records)
    abandoned = spool_dir / "abandoned"
    kept = _abandoned(spool_dir)
    if kept:
        text += (
            f"  {len(kept)} file(s) that can never be uploaded (never closed, their writer "
            f"killed, or their record lost) are kept in {abandoned}\n"
        )
    done = changes.recent(spool_dir, RECENT_CHANGES)
    if done:
        text += f"  last {len(done)} artifact(s) replaced or deleted on the server:\n"
        text += "".join(change.describe() for change in done)
    return text


def _abandoned(spool_dir: Path) -> list[Path]:
    abandoned = spool_dir / "abandoned"
    return sorted(abandoned.iterdir()) if abandoned.is_dir() else []


def holds_files(spool_dir: Path) -> bool:
    """True when the spool at *spool_dir* has pending uploads or files kept in abandoned/."""
    return bool(read_pending(spool_dir) or _abandoned(spool_dir))


def _matters(record: registry.MountRecord) -> bool:
    """True for a mount ``simvuefs status`` lists: running (or dead but still mounted), or
    with files in its spool."""
    return (
        record.daemon_running()
        or record.mountpoint in mount_table()
        or holds_files(Path(record.spool_dir))
    )


def _mount_state(record: registry.MountRecord) -> str:
    mounted = record.mountpoint in mount_table()
    if record.daemon_running():
        return f"mounted (pid {record.pid})" if mounted else f"daemon {record.pid} running"
    if mounted:
        return "dead mount (its daemon is gone; run 'simvuefs unmount' and mount again)"
    return "not mounted (pending uploads resume at its next mount)"


def describe_record(record: registry.MountRecord) -> str:
    """The state of one recorded mount, its live counters and its pending uploads."""
    head = f"{record.mountpoint}: {_mount_state(record)}, server {record.url}\n"
    return head + _counters(Path(record.mountpoint)) + describe_spool(Path(record.spool_dir))


def _counters(mountpoint: Path) -> str:
    data = counters.load(mountpoint)
    return "" if data is None else counters.describe(data)


def _unrecorded(data: dict[str, Any]) -> str:
    """A live mount without a record (read-only: it has no uploads): its counters."""
    head = f"{data['mountpoint']}: mounted read-only (pid {data['pid']})\n"
    return head + counters.describe(data)


def describe_mount(mountpoint: Path) -> str:
    """``simvuefs status MOUNTPOINT``."""
    record = registry.load(mountpoint)
    if record is not None:
        return describe_record(record)
    data = counters.load(mountpoint)
    if data is not None:
        return _unrecorded(data)
    return f"{mountpoint}: no writable simvuefs mount recorded here (nothing pending)\n"


def describe_all() -> str:
    """``simvuefs status``: the recorded mounts of this user that run or hold files (module
    docstring), and live read-only ones."""
    everything = registry.load_all()
    recorded = {record.mountpoint for record in everything}
    records = [record for record in everything if _matters(record)]
    live = [data for data in counters.load_all() if data["mountpoint"] not in recorded]
    if not records and not live:
        return "no simvuefs mount is running or has files pending (nothing pending)\n"
    text = "".join(describe_record(record) for record in records)
    return text + "".join(_unrecorded(data) for data in live)

"""``simvuefs pending export DIR``: copy pending uploads out of their spools.

Each pending upload (failed or still retried) becomes ``DIR/<run id>/<category>/<name>``
(``<name>`` may hold ``/``: sub-directories; a run id that is no plain file name is
%-quoted), and ``DIR/manifest.json`` lists every exported file: its path in DIR, run,
category, name, size, sha256, state and last error, server, mount point, spool and id.

Invariants:

- Nothing in DIR is overwritten. A copy appears under its final name only once complete
  and on disk (written to a temporary name, fsynced, then hard-linked into place); a
  file already there with the same content counts as exported (exporting again is safe);
  one with other content makes the copy ``<name>~<8 hex digits of its id>``.
- The spool is only read, never locked (``pending/<id>.data`` is never written again),
  except for the mark naming the copy (``mailbox.mark_exported``), which ``pending drop``
  checks (``mailbox.exported_copy``); it goes with the record.
- A manifest already in DIR is kept and extended (entries by spool id).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from simvuefs.control.pending import Target
from simvuefs.localio import copy_hashed, fsync_dir, write_atomically
from simvuefs.logs import UsageError
from simvuefs.write import mailbox
from simvuefs.write.spool import HASH_CHUNK, JournalRecord, read_pending

MANIFEST = "manifest.json"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
"""Modes of what export creates: the copies are as private as the spool they come from."""


def export(dest: Path, chosen: list[Target]) -> str:
    """Copy every pending upload of *chosen* into *dest* (module docstring); return the
    report. UsageError if *dest* cannot be used; a file that cannot be copied is reported
    and the others are still copied."""
    try:
        _make_private_dirs(dest)
        manifest = _load_manifest(dest)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot export into {dest}: {exc}") from None
    text = ""
    copied = 0
    for target in chosen:
        for record in read_pending(target.spool_dir):
            try:
                relative, digest = _export_one(dest, target.spool_dir, record)
            except FileNotFoundError:
                text += f"  skipped {_what(record)}: it landed meanwhile\n"
                continue
            except OSError as exc:
                text += f"  FAILED to copy {_what(record)}: {exc}\n"
                continue
            copied += 1
            if digest != record.checksum:
                text += f"  WARNING: the spooled content of {_what(record)} is not what was "
                text += "written (sha256 differs from its record); exported as it is\n"
            manifest[record.id] = {**_entry(relative, record, target), "sha256": digest}
    try:
        write_atomically(dest / MANIFEST, json.dumps(list(manifest.values()), indent=1).encode())
    except OSError as exc:
        raise UsageError(f"cannot write {dest / MANIFEST}: {exc}") from None
    return f"{copied} pending upload(s) exported to {dest} (list: {dest / MANIFEST})\n" + text


def _what(record: JournalRecord) -> str:
    return f"run {record.run_id}: {record.category}/{record.name}"


def _file_name(text: str) -> str:
    """*text* as one safe file name: %-quoted, and never ``.`` or ``..``."""
    name = quote(text, safe=" @+,=:")
    return name if name.strip(".") else "_" + name


def _export_one(dest: Path, spool_dir: Path, record: JournalRecord) -> tuple[Path, str]:
    """Copy the content of *record* into *dest*; mark it exported; return its path in
    *dest* and the sha256 of the copy. Raises OSError (FileNotFoundError when the content
    has left the spool)."""
    source = spool_dir / "pending" / f"{record.id}.data"
    relative = Path(_file_name(record.run_id), record.category, *record.name.split("/"))
    digest = record.checksum
    for candidate in (relative, relative.with_name(f"{relative.name}~{record.id[:8]}")):
        target = dest / candidate
        if target.exists():
            if _holds(target, record):
                break
            continue
        _make_private_dirs(target.parent)
        digest = _copy(source, target)
        break
    else:
        raise FileExistsError(f"{dest / relative} and its alternative hold other content")
    mailbox.mark_exported(spool_dir, record, target.absolute())
    return candidate, digest


def _make_private_dirs(path: Path) -> None:
    """Create *path* and its missing parents, each with mode PRIVATE_DIR (``mkdir -p``
    gives the intermediate ones the umask's mode)."""
    missing = [path, *path.parents]
    for directory in reversed([d for d in missing if not d.exists()]):
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)


def _holds(path: Path, record: JournalRecord) -> bool:
    """True when the file at *path* has the content of *record* (size and sha256)."""
    return path.stat().st_size == record.size and _sha256(path) == record.checksum


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(source: Path, target: Path) -> str:
    """Copy *source* to the new file *target*, complete and fsynced before it appears;
    return the sha256 of what was copied."""
    temporary = target.with_name(f".{target.name}.simvuefs-export")
    try:
        temporary.unlink(missing_ok=True)  # left by an export that was killed
        digest = copy_hashed(source, temporary, mode=PRIVATE_FILE, exclusive=True)
        os.link(temporary, target)  # never replaces a file that appeared meanwhile
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return digest


def _load_manifest(dest: Path) -> dict[str, dict[str, Any]]:
    path = dest / MANIFEST
    if not path.exists():
        return {}
    entries = json.loads(path.read_bytes())
    if not isinstance(entries, list):
        raise ValueError(f"{path} is not a simvuefs export manifest")
    return {str(entry["spool_id"]): entry for entry in entries}


def _entry(relative: Path, record: JournalRecord, target: Target) -> dict[str, Any]:
    return {
        "path": str(relative),
        "run_id": record.run_id,
        "category": record.category,
        "name": record.name,
        "size": record.size,
        "sha256": record.checksum,
        "state": "failed" if record.failed else "pending",
        "last_error": record.last_error,
        "created": record.created.isoformat(),
        "exported": datetime.now(UTC).isoformat(),
        "server": target.url,
        "mountpoint": target.mountpoint,
        "spool": str(target.spool_dir),
        "spool_id": record.id,
    }

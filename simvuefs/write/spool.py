"""The local spool: content of files written into the mount, and the pending-upload journal.

Everything here is synchronous file I/O; the uploader calls it through ``trio.to_thread``.

A spool directory (created 0700; one process at a time, held with ``flock`` on ``lock``)::

    lock               locked by the owning process while it runs
    staging/<id>       content of a file being written
    pending/<id>.data  content committed for upload; never written again
    pending/<id>.json  its journal record (JSON, replaced atomically: temp, fsync, rename)
    pending/<id>.ckpt<N>  the content of a file still being written as of its N-th fsync
                       (its record says ``checkpoint: N``); see "Checkpoints" below
    landed/<id>        content already uploaded, kept briefly so that a rename can re-land it
    abandoned/<id>     files that can never be uploaded (found at start: their writer never
                       closed them, or their record is gone; or their writer was killed by a
                       signal before it closed them); kept for the user, never read
    pending/<id>.exported  where ``simvuefs pending export`` copied the content (a mark that
                       lets ``pending drop`` go ahead); removed with the record
    pending/<rid>.request, .taken, .answer  host-side commands' requests to the process
                       that holds the lock, and its answers (``mailbox.py``)

``<id>`` is 32 random hex digits. Run and artifact names appear only inside records, never
in file names, so no name can reach outside the spool.

Invariants recovery relies on:

- A record is durable (file and directory fsynced) before its data leaves ``staging/``: a
  crash in between leaves a record whose data is still in ``staging/``; recovery finishes
  the move.
- Data moves to ``landed/`` only after its upload landed, and before its record is removed:
  a record whose data is in ``landed/`` has landed; recovery removes both.
- A rename of landed content moves it back to ``pending/`` before its new record is
  written: a crash in between leaves data without a record, which recovery moves to
  ``abandoned/`` (it had landed under the old name, so nothing is lost).
- A record that cannot be read is never removed and its data never deleted: recovery logs
  it and leaves both alone.
- Checkpoints (``fsync`` of a file still being written, :meth:`Spool.checkpoint`): the
  staging content is copied to ``<id>.ckpt<N>`` and fsynced *before* the record saying
  ``checkpoint: N`` is saved; the previous checkpoint's copy is removed only after. So the
  record always names a complete copy. At start, a checkpoint record becomes an ordinary
  pending upload of that copy (the last fsynced content), and the staging file (bytes
  written after that fsync, never closed) goes to ``abandoned/``. The final commit saves a
  record with ``checkpoint: 0`` before it moves the staging content over, so an
  interrupted commit is finished as before.
- A record whose ``failed`` is set (a final refusal, ``refusal.py``) is not attempted again
  until a host-side command or a rename clears it; it stays until it lands or is dropped.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from simvuefs.config import MIB
from simvuefs.errors import ConfigError, LocalError
from simvuefs.localio import TEMP_SUFFIX, copy_hashed, fsync_dir, local_error, write_atomically
from simvuefs.models import CATEGORIES, is_artifact_name

log = logging.getLogger(__name__)

RECORD_VERSION = 1
# Read size when hashing spooled content: bounds memory, large enough for full-speed sha256.
HASH_CHUNK = 1 * MIB
STAGES = ("new", "stored", "marked", "attached")
"""How far an upload got, in order: nothing on the server yet; content stored under
``artifact_id``; marked uploaded (or deduplicated: nothing to mark); attached to the run."""
# sync_file_range(2) flag: start writing dirty pages of the range back, without waiting.
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
_SPOOL_ID = re.compile(r"[0-9a-f]{32}")
_CHECKSUM = re.compile(r"[0-9a-f]{64}")
_ERRNO_NAMES = frozenset(errno.errorcode.values())
EXPORT_MARK = ".exported"
"""Suffix of the mark ``pending export`` leaves beside a record (``pending/<id>.exported``)."""


def new_spool_id() -> str:
    """Return a fresh random id for a spooled file (32 hex digits)."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One pending upload, as stored in ``pending/<id>.json``.

    *stage* (one of STAGES) says how far the upload of *artifact_id* got; an attempt resumes
    after it. *replaces* lists artifacts of the run that showed this file under an earlier
    name; they are deleted once this one has landed. *failed* is the errno name (``EACCES``)
    of a final refusal, whose message is *last_error*; "" while the upload is retried.
    *replaced_checksums* gives, for artifacts in *replaces* that held other content (an
    input this file overwrote), the checksum they must still hold to be deleted (the others
    must hold *checksum*: earlier names of this file). *checkpoint* is N > 0 while the file
    is still being written and the record describes its N-th fsync (module docstring).
    """

    id: str
    run_id: str
    category: str
    name: str
    checksum: str
    size: int
    created: datetime
    attempts: int = 0
    last_error: str = ""
    artifact_id: str | None = None
    stage: str = "new"
    replaces: tuple[str, ...] = ()
    failed: str = ""
    replaced_checksums: dict[str, str] = field(default_factory=dict)
    checkpoint: int = 0

    def expected_checksum(self, artifact_id: str) -> str:
        """The checksum the replaced *artifact_id* must hold to be deleted."""
        return self.replaced_checksums.get(artifact_id, self.checksum)

    @property
    def failed_errno(self) -> int:
        """The errno of the final refusal (0 while the upload is retried)."""
        return int(getattr(errno, self.failed, 0)) if self.failed else 0

    def retried(self) -> JournalRecord:
        """This record, cleared for a new attempt: not failed, and an artifact that was
        created but never attached is abandoned (the next attempt creates a new one)."""
        if self.stage in ("stored", "marked"):
            return replace(self, failed="", stage="new", artifact_id=None)
        return replace(self, failed="")

    def to_bytes(self) -> bytes:
        """Serialise as the JSON stored on disk."""
        data = asdict(self)
        data["created"] = self.created.isoformat()
        data["replaces"] = list(self.replaces)
        return json.dumps({"version": RECORD_VERSION, **data}, indent=1).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, spool_id: str) -> JournalRecord:
        """Parse and check a record read from ``pending/<spool_id>.json``; ValueError if bad."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"unknown record version {data.get('version')!r}")
        if data.get("id") != spool_id:
            raise ValueError("id does not match the file name")
        name = _get(data, "name", str)
        if not is_artifact_name(name):
            raise ValueError(f"invalid artifact name {name!r}")
        category = _get(data, "category", str)
        if category not in CATEGORIES:
            raise ValueError(f"invalid category {category!r}")
        checksum = _get(data, "checksum", str)
        if _CHECKSUM.fullmatch(checksum) is None:
            raise ValueError("checksum is not a sha256 hex digest")
        replaces = _get(data, "replaces", list)
        if not all(isinstance(item, str) and item for item in replaces):
            raise ValueError("replaces must list artifact ids")
        stage = _get(data, "stage", str)
        if stage not in STAGES:
            raise ValueError(f"invalid stage {stage!r}")
        artifact_id = data.get("artifact_id")
        if not (artifact_id is None or (isinstance(artifact_id, str) and artifact_id)):
            raise ValueError("artifact_id must be a non-empty string or null")
        if (artifact_id is None) != (stage == "new"):
            raise ValueError("artifact_id must be set exactly when the stage is not new")
        replaced_checksums = data.get("replaced_checksums", {})  # absent in older records
        if not (
            isinstance(replaced_checksums, dict)
            and all(
                isinstance(key, str) and isinstance(value, str) and _CHECKSUM.fullmatch(value)
                for key, value in replaced_checksums.items()
            )
        ):
            raise ValueError("replaced_checksums must map artifact ids to sha256 digests")
        checkpoint = data.get("checkpoint", 0)
        if not isinstance(checkpoint, int) or isinstance(checkpoint, bool) or checkpoint < 0:
            raise ValueError("checkpoint must be an integer >= 0")
        failed = data.get("failed", "")  # absent from records of earlier versions
        if not (failed == "" or (isinstance(failed, str) and failed in _ERRNO_NAMES)):
            raise ValueError(f"failed must be an errno name or empty, not {failed!r}")
        return cls(
            id=spool_id,
            run_id=_get(data, "run_id", str) or _fail("empty run_id"),
            category=category,
            name=name,
            checksum=checksum,
            size=_count(data, "size"),
            created=datetime.fromisoformat(_get(data, "created", str)),
            attempts=_count(data, "attempts"),
            last_error=_get(data, "last_error", str),
            artifact_id=artifact_id,
            stage=stage,
            replaces=tuple(replaces),
            failed=failed,
            replaced_checksums=dict(replaced_checksums),
            checkpoint=checkpoint,
        )


def _get(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{key} must be a {kind.__name__}")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0")
    return value


def _fail(reason: str) -> str:
    raise ValueError(reason)


def read_at(fd: int, offset: int, size: int) -> bytes:
    """Read up to *size* bytes at *offset* of *fd* (fewer only at end of file)."""
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(parts)


def write_at(fd: int, offset: int, data: bytes | memoryview) -> None:
    """Write all of *data* at *offset* of *fd*."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def export_mark_path(root: Path, spool_id: str) -> Path:
    """Where the export mark of the pending upload *spool_id* of the spool *root* is."""
    return root / "pending" / f"{spool_id}{EXPORT_MARK}"


def read_pending(root: Path) -> list[JournalRecord]:
    """Return the readable records of the spool at *root*, oldest first, without locking it.

    For status displays: a record being replaced at this moment may be missed.
    """
    records = []
    for path in _records(root / "pending"):
        try:
            records.append(JournalRecord.from_bytes(path.read_bytes(), path.stem))
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable upload record %s: %s", path, exc)
    return sorted(records, key=lambda record: record.created)


def _records(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if path.suffix == ".json" and _SPOOL_ID.fullmatch(path.stem):
            yield path


class Spool:
    """An open spool directory, locked for this process (see the module docstring).

    *min_free* bytes must stay free on the spool's filesystem: writes that would eat into
    them fail with ENOSPC before anything is written.
    """

    def __init__(self, root: Path, min_free: int, lock_fd: int) -> None:
        self.root = root
        self.min_free = min_free
        self.staging_dir = root / "staging"
        self.pending_dir = root / "pending"
        self.landed_dir = root / "landed"
        self.abandoned_dir = root / "abandoned"
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, root: Path, min_free: int) -> Spool:
        """Create (0700) and lock the spool at *root*; ConfigError if unusable or in use."""
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for sub in ("staging", "pending", "landed", "abandoned"):
                (root / sub).mkdir(mode=0o700, exist_ok=True)
            lock_fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot use spool directory {root}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise ConfigError(
                f"spool directory {root} is in use by another simvuefs process"
            ) from None
        return cls(root, min_free, lock_fd)

    def close(self) -> None:
        """Release the lock; the spool keeps its content for the next process."""
        os.close(self._lock_fd)

    def staging_path(self, spool_id: str) -> Path:
        """Where the content of a file being written lives."""
        return self.staging_dir / spool_id

    def data_path(self, spool_id: str) -> Path:
        """Where committed content waits for its upload."""
        return self.pending_dir / f"{spool_id}.data"

    def record_path(self, spool_id: str) -> Path:
        """The journal record of a pending upload."""
        return self.pending_dir / f"{spool_id}.json"

    def checkpoint_path(self, spool_id: str, number: int) -> Path:
        """Where the content of the *number*-th fsync of a file being written is kept."""
        return self.pending_dir / f"{spool_id}.ckpt{number}"

    def checkpoint_copies(self, spool_id: str) -> list[Path]:
        """The checkpoint copies of *spool_id* in pending/ (``<id>.ckpt*``). Matched by
        prefix, not globbed: a glob compiles a pattern per file into ``re``'s and pathlib's
        caches (about 1.2 KiB each, issue 17)."""
        prefix = f"{spool_id}.ckpt"
        with os.scandir(self.pending_dir) as entries:
            return [Path(entry.path) for entry in entries if entry.name.startswith(prefix)]

    def landed_path(self, spool_id: str) -> Path:
        """Where uploaded content is kept briefly."""
        return self.landed_dir / spool_id

    def export_mark_path(self, spool_id: str) -> Path:
        """The mark of a pending upload that ``pending export`` copied out."""
        return export_mark_path(self.root, spool_id)

    # -- staging ---------------------------------------------------------------------------

    def create(self, spool_id: str) -> int:
        """Create the empty staging file *spool_id* (from new_spool_id); return an fd to it."""
        self.check_free(0)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(self.staging_path(spool_id), flags, 0o600)
        except OSError as exc:
            raise local_error(exc, f"cannot create a file in {self.staging_dir}") from None

    def check_free(self, grow: int) -> int:
        """Raise LocalError(ENOSPC) unless *grow* more bytes leave ``min_free`` bytes free;
        return how many bytes more than *grow* could be written (the room left after it)."""
        try:
            stat = os.statvfs(self.root)
        except OSError as exc:
            raise local_error(
                exc, f"cannot check the free space of the spool {self.root}"
            ) from None
        free = stat.f_bavail * stat.f_frsize
        if free - grow < self.min_free:
            raise LocalError(
                f"spool {self.root} is full: {free // MIB} MiB free, "
                f"{self.min_free // MIB} MiB kept in reserve",
                errno=errno.ENOSPC,
            )
        return free - grow - self.min_free

    def write(self, fd: int, offset: int, data: bytes) -> None:
        """Write *data* at *offset* of a staging file (check_free first if it grows)."""
        try:
            write_at(fd, offset, data)
        except OSError as exc:
            raise local_error(exc, f"cannot write to the spool {self.root}") from None

    @staticmethod
    def start_writeback(fd: int, offset: int, length: int) -> None:
        """Start writing a range of a staging file to disk, without waiting for it, so that
        the fsync at commit has little left to wait for (Linux ``sync_file_range``; a no-op
        where it is missing or fails: the fsync still does all the work)."""
        if _sync_file_range is not None and length > 0:
            _sync_file_range(
                ctypes.c_int(fd),
                ctypes.c_int64(offset),
                ctypes.c_int64(length),
                ctypes.c_uint(_SYNC_FILE_RANGE_WRITE),
            )

    def truncate(self, fd: int, size: int, grow: int) -> None:
        """Set the size of a staging file, which grows by *grow* bytes (may be 0)."""
        if grow:
            self.check_free(grow)
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise local_error(exc, f"cannot resize a file in the spool {self.root}") from None

    def seal(self, spool_id: str, hasher: hashlib._Hash, start: int, size: int) -> str:
        """Hash ``staging/<spool_id>`` from *start* to *size* into *hasher*, fsync it, and
        return the hex digest (*hasher* already covers the bytes before *start*)."""
        path = self.staging_path(spool_id)
        try:
            with open(path, "rb", buffering=0) as stream:
                stream.seek(start)
                remaining = size - start
                while remaining > 0:
                    chunk = stream.read(min(HASH_CHUNK, remaining))
                    if not chunk:
                        raise LocalError(f"{path} is shorter than {size} bytes", errno=errno.EIO)
                    hasher.update(chunk)
                    remaining -= len(chunk)
                os.fsync(stream.fileno())
        except OSError as exc:
            raise local_error(exc, f"cannot read back {path}") from None
        return hasher.hexdigest()

    def drop_staged(self, spool_id: str) -> None:
        """Delete a staging file that will never be committed (and its checkpoints, and the
        record of a checkpoint or of a commit that failed half-way, if any)."""
        try:
            self.record_path(spool_id).unlink(missing_ok=True)
            fsync_dir(self.pending_dir)
            self.staging_path(spool_id).unlink(missing_ok=True)
            self.data_path(spool_id).unlink(missing_ok=True)
            for path in self.checkpoint_copies(spool_id):
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise local_error(exc, f"cannot remove the staged file {spool_id}") from None

    def abandon_staged(self, spool_id: str) -> Path:
        """Keep a staging file that must never be uploaded (its writer was killed) in
        abandoned/ and return where; its checkpoint record and copies go first, so a crash
        in between leaves a staging file without a record, which recovery abandons too."""
        try:
            self.record_path(spool_id).unlink(missing_ok=True)
            fsync_dir(self.pending_dir)
            for path in self.checkpoint_copies(spool_id):
                path.unlink(missing_ok=True)
            target = self.abandoned_dir / spool_id
            os.rename(self.staging_path(spool_id), target)
            fsync_dir(self.abandoned_dir)
        except OSError as exc:
            raise local_error(exc, f"cannot keep the staged file {spool_id}") from None
        return target

    def checkpoint(self, record: JournalRecord, size: int) -> JournalRecord:
        """Keep a durable copy of the first *size* bytes of ``staging/<id>`` (an fsync of a
        file still being written) and return the record that now describes it: *record*
        (``checkpoint`` N-1, or a fresh one) with checkpoint N, the copy's checksum and size.

        Order (module docstring): copy and fsync, save the record, then drop copy N-1.
        """
        number = record.checkpoint + 1
        target = self.checkpoint_path(record.id, number)
        try:
            checksum = copy_hashed(self.staging_path(record.id), target, mode=0o600)
            if target.stat().st_size != size:
                raise LocalError(
                    f"{target} has {target.stat().st_size} bytes, not {size}", errno=errno.EIO
                )
            fsync_dir(self.pending_dir)
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise local_error(exc, f"cannot keep an fsynced copy in {self.pending_dir}") from None
        saved = replace(record, checksum=checksum, size=size, checkpoint=number)
        self.save(saved)
        if record.checkpoint:
            self.checkpoint_path(record.id, record.checkpoint).unlink(missing_ok=True)
        return saved

    # -- the journal -------------------------------------------------------------------------

    def commit(self, record: JournalRecord) -> None:
        """Make *record* durable, then move its (fsynced) content from staging/ to pending/
        (replacing the copy of a checkpoint, whose leftovers go)."""
        self.save(record)
        try:
            os.rename(self.staging_path(record.id), self.data_path(record.id))
            fsync_dir(self.pending_dir)
            fsync_dir(self.staging_dir)
            for path in self.checkpoint_copies(record.id):
                path.unlink()
        except OSError as exc:
            raise local_error(
                exc, f"cannot record a pending upload in {self.pending_dir}"
            ) from None

    def save(self, record: JournalRecord) -> None:
        """Replace ``pending/<id>.json`` atomically (write temp, fsync, rename, fsync dir)."""
        final = self.record_path(record.id)
        try:
            write_atomically(final, record.to_bytes())
        except OSError as exc:
            raise local_error(exc, f"cannot write the upload record {final}") from None

    def land(self, spool_id: str) -> None:
        """Retire a landed upload: its content moves to landed/, then its record goes.

        Idempotent, so that a retry after a half-done retirement completes it.
        """
        try:
            if not self.landed_path(spool_id).exists():
                os.rename(self.data_path(spool_id), self.landed_path(spool_id))
            self.record_path(spool_id).unlink(missing_ok=True)
            self.export_mark_path(spool_id).unlink(missing_ok=True)
            fsync_dir(self.pending_dir)
        except OSError as exc:
            raise local_error(exc, f"cannot retire the upload record of {spool_id}") from None

    def relaunch(self, record: JournalRecord) -> None:
        """Turn landed content back into a pending upload described by *record* (a rename).

        Raises LocalError(EXDEV) when the landed content is no longer kept.
        """
        try:
            os.rename(self.landed_path(record.id), self.data_path(record.id))
        except FileNotFoundError:
            raise LocalError(
                f"{record.name} was uploaded and is no longer kept locally; copy it instead",
                errno=errno.EXDEV,
            ) from None
        except OSError as exc:
            raise local_error(
                exc, f"cannot record a pending upload in {self.pending_dir}"
            ) from None
        self.save(record)

    def drop(self, spool_id: str) -> None:
        """Forget a pending upload: its record first, then its content (and its mark)."""
        try:
            self.record_path(spool_id).unlink(missing_ok=True)
            fsync_dir(self.pending_dir)
            self.data_path(spool_id).unlink(missing_ok=True)
            self.export_mark_path(spool_id).unlink(missing_ok=True)
        except OSError as exc:
            raise local_error(exc, f"cannot remove the pending upload {spool_id}") from None

    def drop_landed(self, spool_id: str) -> None:
        """Delete the kept content of a landed upload."""
        self.landed_path(spool_id).unlink(missing_ok=True)

    def clear_landed(self) -> None:
        """Delete all kept landed content (and any record left beside it: it landed)."""
        for path in self.landed_dir.iterdir():
            self.record_path(path.name).unlink(missing_ok=True)
            self.export_mark_path(path.name).unlink(missing_ok=True)
            path.unlink()

    # -- recovery ----------------------------------------------------------------------------

    def recover(self) -> list[JournalRecord]:
        """Bring the spool to a clean state at start and return the pending records.

        Finishes interrupted commits and landings, moves files that can never be uploaded to
        abandoned/ (with a warning), and skips unreadable records with a warning.
        """
        for temporary in self.pending_dir.glob(f"*.json{TEMP_SUFFIX}"):
            temporary.unlink()  # an interrupted save: the previous record is intact
        self.clear_landed()
        self._recover_checkpoints()
        for path in self.staging_dir.iterdir():
            if self.record_path(path.name).exists():  # an interrupted commit
                os.rename(path, self.data_path(path.name))
            else:
                self._abandon(path, "its writer never closed it")
        records = []
        for path in sorted(_records(self.pending_dir)):
            record = self._load(path)
            if record is not None:
                records.append(record)
        for path in self.pending_dir.glob("*.data"):
            if not self.record_path(path.stem).exists():
                self._abandon(path, "its upload record is missing")
        for path in self.pending_dir.glob(f"*{EXPORT_MARK}*"):
            if not self.record_path(path.name.partition(".")[0]).exists():
                path.unlink()  # the upload landed or was dropped after it was exported
        return sorted(records, key=lambda record: record.created)

    def _recover_checkpoints(self) -> None:
        """Turn each checkpoint record into a pending upload of its last fsynced copy; keep
        what was written after it in abandoned/. Other copies (older ones, or of an fsync
        that never returned, whose bytes the staging file holds) are removed."""
        for path in sorted(_records(self.pending_dir)):
            try:
                record = JournalRecord.from_bytes(path.read_bytes(), path.stem)
            except (OSError, ValueError):
                continue  # _load reports it
            if not record.checkpoint:
                continue
            copy = self.checkpoint_path(record.id, record.checkpoint)
            if copy.exists():
                os.replace(copy, self.data_path(record.id))
            staging = self.staging_path(record.id)
            if staging.exists():
                self._abandon(staging, "written after its last fsync, never closed")
            self.save(replace(record, checkpoint=0))
            log.warning(
                "%s of run %s was never closed: its content as of its last fsync is uploaded",
                record.name,
                record.run_id,
            )
        for copy in self.pending_dir.glob("*.ckpt*"):
            copy.unlink()

    def _load(self, path: Path) -> JournalRecord | None:
        try:
            record = JournalRecord.from_bytes(path.read_bytes(), path.stem)
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable upload record %s (kept, with its data): %s", path, exc)
            return None
        data = self.data_path(record.id)
        try:
            size = data.stat().st_size
        except OSError as exc:
            log.warning("skipping upload record %s: cannot use %s: %s", path, data, exc.strerror)
            return None
        if size != record.size:
            log.warning(
                "skipping upload record %s: %s has %d bytes, the record says %d",
                path,
                data,
                size,
                record.size,
            )
            return None
        return record

    def _abandon(self, path: Path, reason: str) -> None:
        target = self.abandoned_dir / path.name
        os.rename(path, target)
        log.warning("cannot upload spooled file %s (%s); kept as %s", path.name, reason, target)

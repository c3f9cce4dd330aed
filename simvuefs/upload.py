"""The write path: files created under ``runs/<run>/<category>/`` become Simvue artifacts.

Life of a :class:`StagedFile` (only :class:`Uploader` changes it)::

    STAGED --commit--> PENDING --lands--> LANDED
      |                  |   ^              |
      +----discard-------+   +---rename-----+   (lands again under the new name)
              v
          DISCARDED

- STAGED: the content is a spool staging file; writes, truncates and reads are allowed.
- PENDING: the content is frozen and journaled (see ``spool.py``). The upload is attempted
  at once by ``commit`` (whose caller gets the error), then in the background with capped,
  jittered exponential backoff until it lands; ``open_uploader`` resumes the journal at
  start, so pending uploads survive unmounts and crashes.
- LANDED: the artifact exists and is attached to the run; ``artifact`` is the server's record.
- DISCARDED: unlinked before it landed; nothing is uploaded.

Every attempt follows the official client's sequence (protocol 4.2): create the artifact,
upload unless the server answers ``url: null`` (dedup), mark it uploaded, attach it to the
run, read it back. The journal records each step, so a retry resumes after the last one
that succeeded and never attaches a second artifact.

Concurrency: all state lives in the trio thread; file I/O and hashing run in worker threads.
Per file, ``_lock`` serialises content changes and state transitions (held briefly, or for
the hashing at commit), ``_attempt_lock`` lets one upload attempt run at a time (held for
the upload). Each pending file has at most one background retry loop.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import logging
import mimetypes
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import trio

from simvuefs.client import SimvueClient
from simvuefs.config import MIB, Settings
from simvuefs.errors import DeadlineExceeded, LocalError, NotFound, SimvueError, StatusError
from simvuefs.models import CATEGORIES, Artifact
from simvuefs.spool import (
    JournalRecord,
    Spool,
    default_spool_dir,
    is_valid_name,
    local_error,
    new_spool_id,
    read_at,
)

log = logging.getLogger(__name__)

# Commit deadline = request_timeout + the official client's upload timeout (10 s + 1 s per
# MiB, protocol 4.2): a slow but moving upload of a big file is not cut off.
UPLOAD_BASE_SECONDS = 10.0
UPLOAD_SECONDS_PER_MIB = 1.0
# Background attempts running at once (foreground commits are not limited).
BACKGROUND_UPLOADS = 2
# How long landed content stays in the spool so that a rename (rsync's temp-then-rename)
# can land it again under the new name even if the server wants the bytes again.
LANDED_RETENTION = 30.0
# Statuses of a DELETE that retrying will not change: the old name stays, with a warning.
_DELETE_REFUSED = (400, 403, 405, 501)


class FileState(enum.Enum):
    """Where a written file is in its life (module docstring)."""

    STAGED = "staged"
    PENDING = "pending"
    LANDED = "landed"
    DISCARDED = "discarded"


class StagedFile:
    """A file written through the mount, from its creation until it lands or is discarded.

    The filesystem keeps one per node and reads the public attributes (*size* and *mtime*
    follow the writes; *artifact* is set once LANDED); only the Uploader changes them.
    """

    def __init__(
        self, spool_id: str, run_id: str, category: str, name: str, data: Path, mtime: float
    ) -> None:
        self.spool_id = spool_id
        self.run_id = run_id
        self.category = category
        self.name = name
        self.state = FileState.STAGED
        self.size = 0
        self.mtime = mtime
        self.checksum = ""
        self.artifact: Artifact | None = None
        self._data = data  # where the content is now (staging, pending or landed)
        self._fd: int | None = None  # open while the filesystem holds handles
        self._handles = 0
        self._writers = 0
        # sha256 of the first _hashed bytes, kept while writes are sequential; None = rehash.
        self._hasher: hashlib._Hash | None = hashlib.sha256()
        self._hashed = 0
        self._record: JournalRecord | None = None  # set while PENDING
        self._lock = trio.Lock()
        self._attempt_lock = trio.Lock()
        self._attempt_scope: trio.CancelScope | None = None
        self._uploading = False
        self._retrying = False
        self._wake = trio.Event()
        self._generation = 0  # bumped at each landing, so old retention timers do nothing

    @property
    def key(self) -> tuple[str, str, str]:
        """``(run_id, category, name)``: at most one live file has a given key."""
        return (self.run_id, self.category, self.name)

    @property
    def attempts(self) -> int:
        """Failed upload attempts so far (0 unless PENDING)."""
        return self._record.attempts if self._record else 0

    @property
    def last_error(self) -> str:
        """Why the last upload attempt failed ("" if none did)."""
        return self._record.last_error if self._record else ""

    def __repr__(self) -> str:
        return f"<StagedFile {self.run_id}/{self.category}/{self.name} {self.state.value}>"


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """A snapshot of one pending upload, for listings, xattrs and ``simvuefs status``.

    *state* is ``uploading`` while an attempt runs, else ``waiting``.
    """

    run_id: str
    category: str
    name: str
    size: int
    created: datetime
    attempts: int
    last_error: str
    state: str
    spool_id: str

    @classmethod
    def from_record(cls, record: JournalRecord, uploading: bool = False) -> PendingUpload:
        """Describe the journaled upload *record*."""
        return cls(
            run_id=record.run_id,
            category=record.category,
            name=record.name,
            size=record.size,
            created=record.created,
            attempts=record.attempts,
            last_error=record.last_error,
            state="uploading" if uploading else "waiting",
            spool_id=record.id,
        )


@dataclass(frozen=True, slots=True)
class UploaderStats:
    """Counters of an Uploader: files now *staged* and *pending*; since start, uploads
    *committed* (landed), *failed* attempts and content *bytes_uploaded* (dedup sends none)."""

    staged: int
    pending: int
    committed: int
    failed: int
    bytes_uploaded: int


def commit_deadline(size: int, settings: Settings) -> float:
    """Seconds one upload attempt of *size* bytes may take, every step included."""
    return settings.request_timeout + UPLOAD_BASE_SECONDS + size / MIB * UPLOAD_SECONDS_PER_MIB


def original_path(record: JournalRecord) -> str:
    """The ``original_path`` sent for an upload: non-empty, so clients see a file artifact."""
    return f"simvuefs://{record.run_id}/{record.category}/{record.name}"


def mime_type(name: str) -> str:
    """Guess like the official client: ``mimetypes``, else ``application/octet-stream``."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@asynccontextmanager
async def open_uploader(
    client: SimvueClient,
    settings: Settings,
    on_landed: Callable[[StagedFile], None] | None = None,
) -> AsyncIterator[Uploader]:
    """Open the spool (``settings.spool_dir`` or the default), resume its pending uploads,
    and yield the Uploader.

    *on_landed* is called in the trio thread each time a file lands, also in the background
    (the filesystem refreshes its listing there). On exit, uploads in progress get up to
    ``settings.shutdown_upload_wait`` seconds; the rest stay pending for the next start.
    Raises ConfigError if the spool cannot be used or another process holds it.
    """
    root = settings.spool_dir or default_spool_dir()
    spool = await trio.to_thread.run_sync(Spool.open, root, settings.spool_min_free)
    try:
        async with trio.open_nursery() as nursery:
            uploader = Uploader(client, settings, spool, nursery, on_landed)
            await uploader._resume()
            try:
                yield uploader
            finally:
                with trio.CancelScope(shield=True):
                    await uploader._drain()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(spool.clear_landed)
        spool.close()


class Uploader:
    """Stages files written into the mount and lands them as artifacts (module docstring).

    Errors are ``simvuefs.errors`` exceptions: ``LocalError`` (with its errno) for local
    refusals, the client's errors for failed uploads.
    """

    def __init__(
        self,
        client: SimvueClient,
        settings: Settings,
        spool: Spool,
        nursery: trio.Nursery,
        on_landed: Callable[[StagedFile], None] | None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._spool = spool
        self._nursery = nursery
        self._on_landed = on_landed
        self._live: dict[tuple[str, str, str], StagedFile] = {}  # STAGED and PENDING, by key
        self._pending: dict[str, StagedFile] = {}  # by spool id
        self._limiter = trio.CapacityLimiter(BACKGROUND_UPLOADS)
        self._inflight = 0
        self._inflight_changed = trio.lowlevel.ParkingLot()
        self._closing = False
        self._committed = 0
        self._failed = 0
        self._bytes_uploaded = 0

    # -- listings --------------------------------------------------------------------------

    def lookup(self, run_id: str, category: str, name: str) -> StagedFile | None:
        """Return the STAGED or PENDING file with this name, if any."""
        return self._live.get((run_id, category, name))

    def staged(self, run_id: str, category: str = "input") -> list[StagedFile]:
        """Files of *run_id*'s *category* that exist only here (STAGED or PENDING), by name."""
        found = [f for f in self._live.values() if f.run_id == run_id and f.category == category]
        return sorted(found, key=lambda f: f.name)

    def pending(self) -> list[PendingUpload]:
        """All pending uploads, oldest first."""
        uploads = [
            PendingUpload.from_record(f._record, f._uploading)
            for f in self._pending.values()
            if f._record is not None
        ]
        return sorted(uploads, key=lambda upload: upload.created)

    def statistics(self) -> UploaderStats:
        """Return the counters (UploaderStats)."""
        staged = sum(1 for f in self._live.values() if f.state is FileState.STAGED)
        return UploaderStats(
            staged=staged,
            pending=len(self._pending),
            committed=self._committed,
            failed=self._failed,
            bytes_uploaded=self._bytes_uploaded,
        )

    # -- writing ---------------------------------------------------------------------------

    async def create(self, run_id: str, name: str, category: str = "input") -> StagedFile:
        """Start the new file *name* (relative to the category directory, e.g.
        ``system/mesh.dat``); it comes back open once, for writing.

        Raises LocalError: EINVAL for a name Simvue cannot store; EEXIST when the name is
        being written or uploaded already; ENOSPC/EIO when the spool cannot take a file.
        """
        _check_name(name, category)
        spool_id = new_spool_id()
        f = StagedFile(
            spool_id, run_id, category, name, self._spool.staging_path(spool_id), time.time()
        )
        self._reserve(f.key, f)
        try:
            f._fd = await trio.to_thread.run_sync(self._spool.create, spool_id)
        except BaseException:
            del self._live[f.key]
            raise
        f._handles = f._writers = 1
        log.debug("staging %r as %s", f, spool_id)
        return f

    async def open(self, f: StagedFile, *, write: bool) -> None:
        """Count one more open handle of a STAGED or PENDING *f*.

        Raises LocalError: EBUSY when *write* and another handle writes; EACCES when *write*
        and the content is committed; ESTALE when *f* has landed or is gone (read the
        artifact instead).
        """
        if write and f.state is not FileState.STAGED:
            raise LocalError(f"{f.name} is committed and can no longer change", errno=errno.EACCES)
        if write and f._writers:
            raise LocalError(f"{f.name} is being written by another process", errno=errno.EBUSY)
        async with f._lock:
            if f._fd is None:
                if f.state not in (FileState.STAGED, FileState.PENDING):
                    raise LocalError(f"{f.name} is no longer in the spool", errno=errno.ESTALE)
                flags = os.O_RDWR if f.state is FileState.STAGED else os.O_RDONLY
                f._fd = await trio.to_thread.run_sync(_open_fd, f._data, flags)
            f._handles += 1
            f._writers += write

    async def release(self, f: StagedFile, *, write: bool) -> None:
        """Forget one handle (opened by ``create`` or ``open``); the last one closes the fd."""
        f._handles -= 1
        f._writers -= write
        if f._handles == 0 and f._fd is not None:
            async with f._lock:
                if f._handles == 0 and f._fd is not None:
                    fd, f._fd = f._fd, None
                    await trio.to_thread.run_sync(os.close, fd)

    async def write(self, f: StagedFile, offset: int, data: bytes) -> int:
        """Write *data* at *offset* of a STAGED *f*; return ``len(data)``.

        Raises LocalError: EBADF once *f* is committed; ENOSPC when the spool is full.
        """
        async with f._lock:
            fd = _writable_fd(f)
            end = offset + len(data)
            grow = max(0, end - f.size)
            sequential = f._hasher is not None and offset == f._hashed
            await trio.to_thread.run_sync(self._write_sync, f, fd, offset, data, grow, sequential)
            f._hashed = end if sequential else f._hashed
            f.size = max(f.size, end)
            f.mtime = time.time()
        return len(data)

    def _write_sync(
        self, f: StagedFile, fd: int, offset: int, data: bytes, grow: int, sequential: bool
    ) -> None:
        """Worker thread, f._lock held: write, and hash along while writes are sequential."""
        hasher, f._hasher = f._hasher, None  # an error below leaves the hash to be redone
        self._spool.write(fd, offset, data, grow)
        if sequential and hasher is not None:
            hasher.update(data)
            f._hasher = hasher

    async def truncate(self, f: StagedFile, size: int) -> None:
        """Set the size of a STAGED *f* (zeros when it grows). Raises like ``write``."""
        async with f._lock:
            fd = _writable_fd(f)
            grow = max(0, size - f.size)
            await trio.to_thread.run_sync(self._spool.truncate, fd, size, grow)
            if size < f._hashed:
                f._hasher = None
            f.size = size
            f.mtime = time.time()

    async def read(self, f: StagedFile, offset: int, size: int) -> bytes:
        """Read the local content of *f* through an open handle: exactly *size* bytes unless
        the end of the file comes first. Raises LocalError(EBADF) without an open handle."""
        fd = f._fd
        if fd is None:
            raise LocalError(f"{f.name} is not open", errno=errno.EBADF)
        length = min(size, f.size - offset)
        if length <= 0:
            return b""
        return await trio.to_thread.run_sync(read_at, fd, offset, length)

    # -- committing ------------------------------------------------------------------------

    async def commit(self, f: StagedFile) -> Artifact | None:
        """Upload *f* now: what FUSE ``flush``/``fsync`` of a written file calls.

        STAGED: hash, fsync and journal the content (PENDING from then on, whatever
        happens), then attempt the upload within ``commit_deadline``. PENDING: attempt
        again now, or wait for the attempt in progress. LANDED: nothing to do. Returns the
        artifact, or None if *f* was discarded.

        Raises LocalError when the spool cannot journal it (it stays STAGED); the client's
        error when the upload fails (it stays PENDING and is retried in the background).
        """
        if f.state is FileState.STAGED:
            async with f._lock:
                if f.state is FileState.STAGED:
                    await self._journal(f)
        if f.state is FileState.PENDING:
            return await self._land(f)
        return f.artifact

    async def _journal(self, f: StagedFile) -> None:
        """STAGED -> PENDING (f._lock held): seal the content, write the record, move it."""
        hasher, start = f._hasher, f._hashed
        f._hasher = None  # sealing consumes it; a failed commit rehashes from the start
        if hasher is None:
            hasher, start = hashlib.sha256(), 0
        checksum = await trio.to_thread.run_sync(
            self._spool.seal, f.spool_id, hasher, start, f.size
        )
        record = JournalRecord(
            id=f.spool_id,
            run_id=f.run_id,
            category=f.category,
            name=f.name,
            checksum=checksum,
            size=f.size,
            created=datetime.now(UTC),
        )
        await trio.to_thread.run_sync(self._spool.commit, record)
        f.checksum = checksum
        f.state = FileState.PENDING
        f._record = record
        f._data = self._spool.data_path(f.spool_id)
        self._pending[f.spool_id] = f
        log.debug("committed %r: %d bytes, sha256 %s", f, f.size, checksum)

    async def _land(self, f: StagedFile) -> Artifact | None:
        """Make one upload attempt for a PENDING *f* (or wait for the one in progress)."""
        async with f._attempt_lock:
            if f.state is not FileState.PENDING:
                return f.artifact
            self._inflight += 1
            f._uploading = True
            try:
                with trio.CancelScope() as f._attempt_scope:  # discard() cancels it
                    try:
                        artifact = await self._attempt(f)
                        with trio.CancelScope(shield=True):
                            await self._retire(f, artifact)
                        return artifact
                    except Exception as exc:
                        await self._note_failure(f, exc)
                        raise
                return None  # discarded while uploading
            finally:
                f._attempt_scope = None
                f._uploading = False
                self._inflight -= 1
                self._inflight_changed.unpark_all()

    async def _attempt(self, f: StagedFile) -> Artifact:
        """Run the upload sequence from the last step the journal records, with a deadline."""
        assert f._record is not None
        seconds = commit_deadline(f._record.size, self._settings)
        with trio.move_on_after(seconds):
            return await self._upload_steps(f)
        raise DeadlineExceeded(f"upload of {f.name} did not finish within {seconds:.0f} s")

    async def _upload_steps(self, f: StagedFile) -> Artifact:
        record = f._record
        assert record is not None
        if record.stage == "new":
            slot = await self._client.create_artifact(
                name=record.name,
                original_path=original_path(record),
                size=record.size,
                mime_type=mime_type(record.name),
                checksum=record.checksum,
            )
            stage = "stored" if slot.url is not None else "marked"  # url None: dedup
            if slot.url is not None:
                filename = PurePosixPath(record.name).name
                path = self._spool.data_path(record.id)
                await self._client.upload_content(slot, path, record.size, filename)
                self._bytes_uploaded += record.size
            record = await self._save(f, replace(record, artifact_id=slot.artifact_id, stage=stage))
        artifact_id = record.artifact_id
        assert artifact_id is not None
        if record.stage == "stored":
            await self._client.mark_uploaded(artifact_id)
            record = await self._save(f, replace(record, stage="marked"))
        if record.stage == "marked":
            await self._client.attach(record.run_id, artifact_id, record.category)
            record = await self._save(f, replace(record, stage="attached"))
        artifact = await self._client.get_artifact(artifact_id)
        while record.replaces:
            await self._delete_replaced(record.replaces[0], record)
            record = await self._save(f, replace(record, replaces=record.replaces[1:]))
        return artifact

    async def _delete_replaced(self, artifact_id: str, record: JournalRecord) -> None:
        """Delete the artifact that showed this file under an earlier name."""
        try:
            await self._client.delete_artifact(artifact_id)
        except NotFound:
            pass
        except StatusError as exc:
            if exc.status not in _DELETE_REFUSED:
                raise
            log.warning(
                "run %s: the server refused to delete artifact %s (status %d), the earlier "
                "name of %s; both names stay",
                record.run_id,
                artifact_id,
                exc.status,
                record.name,
            )

    async def _save(self, f: StagedFile, record: JournalRecord) -> JournalRecord:
        await trio.to_thread.run_sync(self._spool.save, record)
        f._record = record
        return record

    async def _retire(self, f: StagedFile, artifact: Artifact) -> None:
        """PENDING -> LANDED: keep the content briefly (for renames), drop the record."""
        async with f._lock:
            await trio.to_thread.run_sync(self._spool.land, f.spool_id)
            f.state = FileState.LANDED
            f.artifact = artifact
            f._record = None
            f._data = self._spool.landed_path(f.spool_id)
            f._generation += 1
            del self._pending[f.spool_id]
            if self._live.get(f.key) is f:
                del self._live[f.key]
            f._wake.set()
            self._committed += 1
        self._nursery.start_soon(self._expire_landed, f, f._generation)
        log.info(
            "uploaded %s to run %s as artifact %s (%d bytes)", f.name, f.run_id, artifact.id, f.size
        )
        if self._on_landed is not None:
            try:
                self._on_landed(f)
            except Exception:
                log.exception("the landing callback failed for %r", f)

    async def _expire_landed(self, f: StagedFile, generation: int) -> None:
        await trio.sleep(LANDED_RETENTION)
        async with f._lock:
            if f.state is FileState.LANDED and f._generation == generation:
                await trio.to_thread.run_sync(self._spool.drop_landed, f.spool_id)

    async def _note_failure(self, f: StagedFile, exc: Exception) -> None:
        """Count a failed attempt in the journal and make sure a retry loop runs."""
        self._failed += 1
        record = f._record
        assert record is not None
        reason = str(exc)[:500] or type(exc).__name__
        record = replace(record, attempts=record.attempts + 1, last_error=reason)
        try:
            await self._save(f, record)
        except LocalError as save_error:
            f._record = record
            log.error("%s (the spool keeps the content)", save_error)
        log.warning(
            "upload of %s to run %s failed (attempt %d): %s; retrying in the background",
            f.name,
            f.run_id,
            record.attempts,
            reason,
            exc_info=not isinstance(exc, SimvueError),
        )
        self._ensure_retry(f, immediate=False)

    # -- background retries ----------------------------------------------------------------

    def _ensure_retry(self, f: StagedFile, *, immediate: bool) -> None:
        if f._retrying:
            if immediate:
                f._wake.set()
        elif not self._closing:
            f._retrying = True
            self._nursery.start_soon(self._retry_loop, f, immediate)

    async def _retry_loop(self, f: StagedFile, immediate: bool) -> None:
        try:
            delay = 0.0 if immediate else self._backoff(f.attempts)
            while True:
                f._wake = trio.Event()
                with trio.move_on_after(delay):
                    await f._wake.wait()
                if self._closing or f.state is not FileState.PENDING:
                    return
                async with self._limiter:
                    if self._closing or f.state is not FileState.PENDING:
                        return
                    try:
                        await self._land(f)
                    except Exception:
                        pass  # _land logged it and counted the attempt; keep retrying
                if f.state is not FileState.PENDING:
                    return
                delay = self._backoff(f.attempts)
        finally:
            f._retrying = False

    def _backoff(self, attempts: int) -> float:
        """Exponential from ``upload_retry_initial``, capped at ``upload_retry_max``, times a
        random factor in [0.5, 1) so that many pending uploads do not retry in step."""
        settings = self._settings
        raw = settings.upload_retry_initial * 2.0 ** min(max(attempts - 1, 0), 32)
        return min(raw, settings.upload_retry_max) * random.uniform(0.5, 1.0)

    # -- renaming and discarding ------------------------------------------------------------

    async def rename(self, f: StagedFile, new_name: str) -> None:
        """Give *f* the name *new_name* in the same run and category (FUSE ``rename``).

        STAGED or PENDING and not attached yet: only the name changes (a pending record is
        rewritten; an artifact created under the old name but never attached is left
        unused). LANDED, or attached under the old name: the kept content is journaled
        again under the new name (``replaces`` the old artifact), landed at once (the
        server knows the checksum, so no bytes move), and the old artifact is deleted. The
        rename itself succeeds once journaled; a failed landing is retried like any upload.

        Raises LocalError: EINVAL (name); EEXIST when *new_name* is being written or
        uploaded; EXDEV when *f* landed too long ago for its content to be kept; ENOENT
        when *f* was discarded.
        """
        _check_name(new_name, f.category)
        if new_name == f.name:
            return
        if f.state is FileState.DISCARDED:
            raise LocalError(f"{f.name} no longer exists", errno=errno.ENOENT)
        old_key = f.key
        new_key = (f.run_id, f.category, new_name)
        self._reserve(new_key, f)
        try:
            async with f._attempt_lock, f._lock:
                reland = await self._rename_locked(f, new_name)
        except BaseException:
            del self._live[new_key]
            raise
        if self._live.get(old_key) is f:
            del self._live[old_key]
        log.info("renamed %s to %s in run %s", old_key[2], new_name, f.run_id)
        if reland:
            try:
                await self._land(f)
            except Exception:
                pass  # _land logged it; the rename stands and the landing is retried
        elif f.state is FileState.PENDING:
            self._ensure_retry(f, immediate=True)

    async def _rename_locked(self, f: StagedFile, new_name: str) -> bool:
        """Rename under both locks; True when *f* must land again under the new name."""
        if f.state is FileState.STAGED:
            f.name = new_name
            return False
        if f.state is FileState.PENDING:
            record = f._record
            assert record is not None
            attached = _attached(f)
            replaces = record.replaces + ((record.artifact_id or "",) if attached else ())
            await self._save(
                f, replace(record, name=new_name, artifact_id=None, stage="new", replaces=replaces)
            )
            f.name = new_name
            return attached
        if f.state is FileState.LANDED and f.artifact is not None:
            record = JournalRecord(
                id=f.spool_id,
                run_id=f.run_id,
                category=f.category,
                name=new_name,
                checksum=f.checksum,
                size=f.size,
                created=datetime.now(UTC),
                replaces=(f.artifact.id,),
            )
            await trio.to_thread.run_sync(self._spool.relaunch, record)
            f.name = new_name
            f.state = FileState.PENDING
            f.artifact = None
            f._record = record
            f._data = self._spool.data_path(f.spool_id)
            f._generation += 1
            self._pending[f.spool_id] = f
            return True
        raise LocalError(f"{f.name} no longer exists", errno=errno.ENOENT)

    async def discard(self, f: StagedFile) -> None:
        """Forget *f* before it lands (FUSE ``unlink``); nothing of it is uploaded.

        An upload in progress is cancelled. Open handles keep working on the unlinked
        content. Raises LocalError(EPERM) when *f* is already an artifact of the run.
        """
        if f._attempt_scope is not None and not _attached(f):
            f._attempt_scope.cancel()
        async with f._attempt_lock, f._lock:
            if f.state is FileState.DISCARDED:
                return
            if f.state is FileState.LANDED or _attached(f):
                raise LocalError(
                    f"{f.name} is uploaded; artifacts cannot be deleted", errno=errno.EPERM
                )
            if f.state is FileState.STAGED:
                await trio.to_thread.run_sync(self._spool.drop_staged, f.spool_id)
            else:
                await trio.to_thread.run_sync(self._spool.drop, f.spool_id)
                del self._pending[f.spool_id]
            f.state = FileState.DISCARDED
            f._record = None
            if self._live.get(f.key) is f:
                del self._live[f.key]
            f._wake.set()
        log.info("discarded %s in run %s before upload", f.name, f.run_id)

    # -- start and stop --------------------------------------------------------------------

    def _reserve(self, key: tuple[str, str, str], f: StagedFile) -> None:
        if key in self._live:
            raise LocalError(
                f"{key[2]} in run {key[0]} is already being written or uploaded",
                errno=errno.EEXIST,
            )
        self._live[key] = f

    async def _resume(self) -> None:
        """Load the journal and start a retry loop for every pending upload."""
        records = await trio.to_thread.run_sync(self._spool.recover)
        for record in records:
            f = StagedFile(
                record.id,
                record.run_id,
                record.category,
                record.name,
                self._spool.data_path(record.id),
                record.created.timestamp(),
            )
            f.state = FileState.PENDING
            f.size = record.size
            f.checksum = record.checksum
            f._hasher = None
            f._record = record
            self._pending[record.id] = f
            if f.key in self._live:
                log.warning("two pending uploads of %s in run %s: both land", f.name, f.run_id)
            else:
                self._live[f.key] = f
            self._ensure_retry(f, immediate=True)
        if records:
            log.info("resuming %d pending upload(s) from %s", len(records), self._spool.pending_dir)

    async def _drain(self) -> None:
        """Stop retrying, give uploads in progress their grace time, report what is left."""
        self._closing = True
        for f in self._pending.values():
            f._wake.set()
        with trio.move_on_after(self._settings.shutdown_upload_wait):
            while self._inflight:
                await self._inflight_changed.park()
        if self._pending:
            log.warning(
                "%d upload(s) still pending in %s; they resume at the next mount",
                len(self._pending),
                self._spool.pending_dir,
            )
        unfinished = [f for f in self._live.values() if f.state is FileState.STAGED]
        if unfinished:
            log.warning(
                "%d file(s) still being written were never closed and are not uploaded: %s",
                len(unfinished),
                ", ".join(f"{f.run_id}/{f.category}/{f.name}" for f in unfinished[:10]),
            )
        for f in [*self._live.values(), *self._pending.values()]:
            if f._fd is not None:
                fd, f._fd = f._fd, None
                os.close(fd)
        log.debug("uploader statistics at exit: %s", self.statistics())


def _check_name(name: str, category: str) -> None:
    if category not in CATEGORIES:
        raise LocalError(f"unknown artifact category {category!r}", errno=errno.EINVAL)
    if not is_valid_name(name):
        raise LocalError(
            f"{name!r} is not a valid Simvue artifact name "
            "(letters, digits, space and - _ . : / only)",
            errno=errno.EINVAL,
        )


def _writable_fd(f: StagedFile) -> int:
    """The fd to write *f* through; writes to a discarded but open file still succeed."""
    if f.state not in (FileState.STAGED, FileState.DISCARDED):
        raise LocalError(f"{f.name} is committed and can no longer change", errno=errno.EBADF)
    if f._fd is None:
        raise LocalError(f"{f.name} is not open", errno=errno.EBADF)
    return f._fd


def _attached(f: StagedFile) -> bool:
    return f._record is not None and f._record.stage == "attached"


def _open_fd(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise local_error(exc, f"cannot open {path}") from None

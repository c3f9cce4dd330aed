"""The write path: files created under ``runs/<run>/<category>/`` become Simvue artifacts.

:class:`Uploader` is what the filesystem calls. It stages new files in the spool
(``spool.py``), journals them at commit, and hands them to the
:class:`~simvuefs.write.landing.Lander` (``landing.py``), which uploads them now and,
after a failure, in the background until they land.
The life of a file is described in ``staged.py``.

Guarantees: a file is journaled (fsynced, with its record) before the first network call
of its upload, and stays in the spool until its artifact is attached and read back, so an
error, an unmount or a crash never loses it; ``open_uploader`` resumes the journal at start.

Concurrency: all state lives in the trio thread; file I/O and hashing run in worker
threads; per-file locks are described in ``staged.py``.

Write-behind: a write returns once its bytes are queued; a flusher task per file writes and
hashes the queue in order, in a worker thread, while the next writes arrive (FUSE writes
are synchronous, so this is what lets the kernel's copy, the spool write and the hashing
overlap). At most WRITE_BEHIND bytes per file wait; reads, truncates, commits and the last
release wait for the queue first. A write is queued only when the free space measured last
(minus everything queued since) covers its growth; otherwise it waits for the queue and is
written at once with a fresh check, so a full spool still fails that write with ENOSPC. A
queued write that fails on disk (the disk filled up meanwhile, an I/O error) fails the next
write, truncate and the commit (``close()``) with its error; that file is never uploaded.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import trio

from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import MIB, Settings
from simvuefs.errors import ConfigError, LocalError
from simvuefs.models import CATEGORIES, Artifact
from simvuefs.write.landing import Lander
from simvuefs.write.spool import (
    JournalRecord,
    Spool,
    default_spool_dir,
    is_valid_name,
    local_error,
    new_spool_id,
    read_at,
)
from simvuefs.write.staged import FileState, PendingUpload, StagedFile

log = logging.getLogger(__name__)

WRITE_BEHIND = 16 * MIB
"""Bytes of one file accepted into memory before they are on the spool disk."""


@dataclass(frozen=True, slots=True)
class UploaderStats:
    """Counters of an Uploader: files now *staged* and *pending*; since start, uploads
    *committed* (landed), *failed* attempts and content *bytes_uploaded* (dedup sends none)."""

    staged: int
    pending: int
    committed: int
    failed: int
    bytes_uploaded: int


@asynccontextmanager
async def open_uploader(
    client: SimvueBackend,
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

    Errors are ``simvuefs.errors`` exceptions: LocalError (with its errno) for local
    refusals, the client's errors for failed uploads.
    """

    def __init__(
        self,
        client: SimvueBackend,
        settings: Settings,
        spool: Spool,
        nursery: trio.Nursery,
        on_landed: Callable[[StagedFile], None] | None,
    ) -> None:
        self._spool = spool
        self._nursery = nursery
        self._on_landed = on_landed
        self._room = 0  # bytes that can be queued before the free space is measured again
        self._queued_growth = 0  # how much the queued writes of all files grow their files
        self._live: dict[tuple[str, str, str], StagedFile] = {}  # STAGED and PENDING, by key
        self._lander = Lander(client, settings, spool, nursery, self._landed)

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
            for f in self._lander.pending()
            if f._record is not None
        ]
        return sorted(uploads, key=lambda upload: upload.created)

    def statistics(self) -> UploaderStats:
        """Return the counters (UploaderStats)."""
        lander = self._lander
        return UploaderStats(
            staged=sum(1 for f in self._live.values() if f.state is FileState.STAGED),
            pending=len(lander.pending()),
            committed=lander.landed,
            failed=lander.failed,
            bytes_uploaded=lander.bytes_uploaded,
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
        async with f._lock:
            if write and f.state is not FileState.STAGED:
                raise LocalError(
                    f"{f.name} is committed and can no longer change", errno=errno.EACCES
                )
            if write and f._writers:
                raise LocalError(f"{f.name} is being written by another process", errno=errno.EBUSY)
            if f._fd is None:
                if f.state not in (FileState.STAGED, FileState.PENDING):
                    raise LocalError(f"{f.name} is no longer in the spool", errno=errno.ESTALE)
                flags = os.O_RDWR if f.state is FileState.STAGED else os.O_RDONLY
                f._fd = await trio.to_thread.run_sync(_open_fd, f._data, flags)
            f._handles += 1
            f._writers += write

    async def release(self, f: StagedFile, *, write: bool) -> None:
        """Forget one handle (opened by ``create`` or ``open``); the last one closes the fd
        (once the queued writes are on disk)."""
        f._handles -= 1
        f._writers -= write
        if f._handles == 0 and f._fd is not None:
            async with f._lock:
                await _written(f)
                if f._handles == 0 and f._fd is not None:
                    fd, f._fd = f._fd, None
                    await trio.to_thread.run_sync(os.close, fd)

    async def write(self, f: StagedFile, offset: int, data: bytes) -> int:
        """Write *data* at *offset* of a STAGED *f*; return ``len(data)`` (write-behind: see
        the module docstring).

        Raises LocalError: EBADF once *f* is committed; ENOSPC when the spool is full; the
        error of an earlier queued write that failed.
        """
        async with f._lock:
            _usable(f)
            end = offset + len(data)
            grow = max(0, end - f.size)
            if grow > self._room:  # not known to fit: write now, measuring the free space
                await _written(f)
                fd = _usable(f)
                room = await trio.to_thread.run_sync(
                    self._write_batch, f, fd, [(offset, data, grow)]
                )
                self._room = room - self._queued_growth
            else:
                self._room -= grow
                self._queued_growth += grow
                f._queue.append((offset, data, grow))
                f._unwritten += len(data)
                if not f._flushing:
                    f._flushing = True
                    self._nursery.start_soon(self._flush_queue, f)
            f.size = max(f.size, end)
            f.mtime = time.time()
            await _written(f, WRITE_BEHIND)
        return len(data)

    async def _flush_queue(self, f: StagedFile) -> None:
        """The flusher of *f*: write its queue to disk in order, batch by batch, until empty
        or a batch fails (then the rest of the queue is dropped with it)."""
        try:
            while f._queue and f._write_error is None:
                batch, f._queue = f._queue, []
                fd = f._fd
                assert fd is not None, "the last release waits for the queue"
                room: int | None = None
                try:
                    with trio.CancelScope(shield=True):  # the queue is all the data there is
                        room = await trio.to_thread.run_sync(self._write_batch, f, fd, batch)
                except LocalError as exc:
                    log.warning("cannot store writes to %s of run %s: %s", f.name, f.run_id, exc)
                    f._write_error = exc
                    batch += f._queue
                    f._queue = []
                finally:
                    f._unwritten -= sum(len(data) for _, data, _ in batch)
                    self._queued_growth -= sum(grow for _, _, grow in batch)
                    f._wake_flush_waiters()
                if room is not None:
                    self._room = room - self._queued_growth
        finally:
            f._flushing = False
            f._wake_flush_waiters()

    def _write_batch(self, f: StagedFile, fd: int, batch: list[tuple[int, bytes, int]]) -> int:
        """Worker thread: check the free space for the batch's growth, write it in order,
        hash along while writes are sequential, start its writeback; return the room left
        (``check_free``)."""
        room = self._spool.check_free(sum(grow for _, _, grow in batch))
        for offset, data, _ in batch:
            hasher, f._hasher = f._hasher, None  # an error below leaves the hash to be redone
            self._spool.write(fd, offset, data)
            if hasher is not None and offset == f._hashed:
                hasher.update(data)
                f._hasher = hasher
                f._hashed += len(data)
        start = min(offset for offset, _, _ in batch)
        self._spool.start_writeback(fd, start, max(o + len(d) for o, d, _ in batch) - start)
        return room

    async def truncate(self, f: StagedFile, size: int) -> None:
        """Set the size of a STAGED *f* (zeros when it grows). Raises like ``write``."""
        async with f._lock:
            await _written(f)
            fd = _usable(f)
            grow = max(0, size - f.size)
            await trio.to_thread.run_sync(self._spool.truncate, fd, size, grow)
            if size < f._hashed:
                f._hasher = None
            f.size = size
            f.mtime = time.time()

    async def read(self, f: StagedFile, offset: int, size: int) -> bytes:
        """Read the local content of *f* through an open handle: exactly *size* bytes unless
        the end of the file comes first. Raises LocalError(EBADF) without an open handle."""
        await _written(f)
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
        happens), then attempt the upload within ``landing.commit_deadline``. PENDING:
        attempt again now, or wait for the attempt in progress. LANDED: nothing to do.
        Returns the artifact, or None if *f* was discarded.

        Raises LocalError when the spool cannot journal it (it stays STAGED); the client's
        error when the upload fails (it stays PENDING and is retried in the background).
        """
        if f.state is FileState.STAGED:
            async with f._lock:
                if f.state is FileState.STAGED:
                    await self._journal(f)
        if f.state is FileState.PENDING:
            return await self._lander.land(f)
        return f.artifact

    async def _journal(self, f: StagedFile) -> None:
        """STAGED -> PENDING (f._lock held): seal the content, write the record, move it."""
        await _written(f)
        if f._write_error is not None:
            raise f._write_error
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
        self._lander.track(f, retry_now=False)
        log.debug("committed %r: %d bytes, sha256 %s", f, f.size, checksum)

    def _landed(self, f: StagedFile) -> None:
        if self._live.get(f.key) is f:
            del self._live[f.key]
        if self._on_landed is not None:
            self._on_landed(f)

    # -- renaming and discarding ------------------------------------------------------------

    async def rename(self, f: StagedFile, new_name: str) -> None:
        """Give *f* the name *new_name* in the same run and category (FUSE ``rename``).

        Not attached yet (STAGED or PENDING): only the name changes (a pending record is
        rewritten; an artifact created under the old name but never attached stays unused).
        Attached (LANDED, or PENDING after the attach): the content is journaled again under
        the new name, replacing the old artifact, and landed at once (the server knows the
        checksum, so no bytes move); the old artifact is deleted once the new one is
        attached. The rename stands once journaled; a failed landing is retried like any.

        Raises LocalError: EINVAL (name); EEXIST when *new_name* is being written or
        uploaded; EXDEV when *f* landed too long ago for its content to be kept (LANDED_RETENTION
        in landing.py); ENOENT when *f* was discarded.
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
                await self._lander.land(f)
            except Exception:
                pass  # logged by land; the rename stands and the landing is retried
        elif f.state is FileState.PENDING:
            self._lander.retry_now(f)

    async def _rename_locked(self, f: StagedFile, new_name: str) -> bool:
        """Rename under both locks; True when *f* must land again under the new name."""
        record = f._record
        if f.state is FileState.STAGED:
            f.name = new_name
            return False
        if f.state is FileState.PENDING and record is not None:
            attached = f.attached
            replaces = record.replaces
            if attached and record.artifact_id:
                replaces += (record.artifact_id,)
            renamed = replace(
                record, name=new_name, artifact_id=None, stage="new", replaces=replaces
            )
            await trio.to_thread.run_sync(self._spool.save, renamed)
            f._record = renamed
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
            self._lander.track(f, retry_now=False)
            return True
        raise LocalError(f"{f.name} no longer exists", errno=errno.ENOENT)

    async def discard(self, f: StagedFile) -> None:
        """Forget *f* before it lands (FUSE ``unlink``); nothing of it is uploaded.

        An upload in progress is cancelled. Open handles keep working on the unlinked
        content. Raises LocalError(EPERM) when *f* is already an artifact of the run.
        """
        if not f.attached:
            self._lander.cancel_attempt(f)
        async with f._attempt_lock, f._lock:
            if f.state is FileState.DISCARDED:
                return
            if f.attached:
                raise LocalError(
                    f"{f.name} is uploaded; artifacts cannot be deleted", errno=errno.EPERM
                )
            if f.state is FileState.STAGED:
                await trio.to_thread.run_sync(self._spool.drop_staged, f.spool_id)
            else:
                await trio.to_thread.run_sync(self._spool.drop, f.spool_id)
                self._lander.forget(f)
            f.state = FileState.DISCARDED
            f._record = None
            if self._live.get(f.key) is f:
                del self._live[f.key]
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
        """Load the journal; every pending upload is attempted again at once."""
        try:
            records = await trio.to_thread.run_sync(self._spool.recover)
        except OSError as exc:
            raise ConfigError(f"cannot recover the spool {self._spool.root}: {exc}") from None
        for record in records:
            f = StagedFile.from_record(record, self._spool.data_path(record.id))
            if f.key in self._live:
                log.warning("two pending uploads of %s in run %s: both land", f.name, f.run_id)
            else:
                self._live[f.key] = f
            self._lander.track(f, retry_now=True)
        if records:
            log.info("resuming %d pending upload(s) from %s", len(records), self._spool.pending_dir)

    async def _drain(self) -> None:
        """Let the lander drain, report files never closed, close what is still open."""
        await self._lander.drain()
        for f in self._live.values():
            await _written(f)
        unfinished = [f for f in self._live.values() if f.state is FileState.STAGED]
        if unfinished:
            log.warning(
                "%d file(s) still being written were never closed and are not uploaded: %s",
                len(unfinished),
                ", ".join(f"{f.run_id}/{f.category}/{f.name}" for f in unfinished[:10]),
            )
        for f in [*self._live.values(), *self._lander.pending()]:
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


def _usable(f: StagedFile) -> int:
    """The fd to write *f* through; writes to a discarded but open file still succeed.

    Raises LocalError: EBADF when committed or not open; a queued write's error.
    """
    if f.state not in (FileState.STAGED, FileState.DISCARDED):
        raise LocalError(f"{f.name} is committed and can no longer change", errno=errno.EBADF)
    if f._fd is None:
        raise LocalError(f"{f.name} is not open", errno=errno.EBADF)
    if f._write_error is not None:
        raise f._write_error
    return f._fd


async def _written(f: StagedFile, limit: int = 0) -> None:
    """Wait until at most *limit* bytes of *f*'s queued writes are not on disk yet."""
    while f._unwritten > limit and f._flushing:
        await f._flushed.wait()


def _open_fd(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise local_error(exc, f"cannot open {path}") from None

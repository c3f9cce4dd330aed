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

Write-behind (``writebehind.py``): a write returns once its bytes are queued; at most
WRITE_BEHIND bytes per file wait; reads, truncates, commits and the last release wait for
the queue first. A queued write that fails on disk fails the next write, truncate and the
commit (``close()``) with its error; that file is never uploaded.

Host-side commands (``simvuefs pending retry|drop``) reach a running uploader through the
spool's mailbox (``mailbox.py``), served by a task of ``open_uploader``: :meth:`Uploader.apply`.
"""

from __future__ import annotations

import errno
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
from simvuefs.config import Settings
from simvuefs.errors import ConfigError, LocalError
from simvuefs.localio import local_error
from simvuefs.models import CATEGORIES, Artifact, check_artifact_name
from simvuefs.write import mailbox
from simvuefs.write.deletes import delete_now, sharing_problem
from simvuefs.write.edits import download_into
from simvuefs.write.landing import LANDED_RETENTION, Lander
from simvuefs.write.spool import (
    JournalRecord,
    Spool,
    new_spool_id,
    read_at,
)
from simvuefs.write.staged import FileState, PendingUpload, StagedFile
from simvuefs.write.writebehind import WRITE_BEHIND, WriteBehind

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UploaderStats:
    """Counters of an Uploader: files now *staged* and *pending*; since start, uploads
    *committed* (landed), *failed* attempts, content *bytes_uploaded* (dedup sends none),
    *writes* taken (one per FUSE write) and *bytes_rehashed*: bytes read back from the
    spool to hash them at commit, because their file was not written in order (a file
    written in order is hashed as its writes arrive, and none of it is read back)."""

    staged: int
    pending: int
    committed: int
    failed: int
    bytes_uploaded: int
    writes: int
    bytes_rehashed: int


@asynccontextmanager
async def open_uploader(
    client: SimvueBackend,
    settings: Settings,
    on_landed: Callable[[StagedFile], None] | None = None,
    on_dropped: Callable[[StagedFile], None] | None = None,
) -> AsyncIterator[Uploader]:
    """Open the spool (``settings.spool_dir``), resume its pending uploads, serve its
    mailbox, and yield the Uploader.

    *on_landed* is called in the trio thread each time a file lands, also in the background
    (the filesystem refreshes its listing there); *on_dropped* each time ``simvuefs pending
    drop`` drops one (the filesystem stops showing it). On exit, uploads in progress get up
    to ``settings.shutdown_upload_wait`` seconds; the rest stay pending for the next start.
    Raises ConfigError if the spool cannot be used or another process holds it.
    """
    spool = await trio.to_thread.run_sync(Spool.open, settings.spool_dir, settings.spool_min_free)
    try:
        async with trio.open_nursery() as nursery:
            uploader = Uploader(client, settings, spool, nursery, on_landed, on_dropped)
            await uploader.resume()
            nursery.start_soon(mailbox.serve, spool.root, uploader.apply)
            try:
                yield uploader
            finally:
                with trio.CancelScope(shield=True):
                    await uploader.drain()
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
        on_dropped: Callable[[StagedFile], None] | None = None,
    ) -> None:
        self._client = client
        self._spool = spool
        self._settings = settings
        self._on_landed = on_landed
        self._on_dropped = on_dropped
        self._write_behind = WriteBehind(spool, nursery)
        self._live: dict[tuple[str, str, str], StagedFile] = {}  # STAGED and PENDING, by key
        self._lander = Lander(client, settings, spool, nursery, self._landed)
        self._writes = 0
        self._bytes_rehashed = 0

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
        return sorted(self._lander.uploads(), key=lambda upload: upload.created)

    def statistics(self) -> UploaderStats:
        """Return the counters (UploaderStats)."""
        lander = self._lander
        return UploaderStats(
            staged=sum(1 for f in self._live.values() if f.state is FileState.STAGED),
            pending=len(lander.pending()),
            committed=lander.landed,
            failed=lander.failed,
            bytes_uploaded=lander.bytes_uploaded,
            writes=self._writes,
            bytes_rehashed=self._bytes_rehashed,
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
            fd = await trio.to_thread.run_sync(self._spool.create, spool_id)
        except BaseException:
            del self._live[f.key]
            raise
        f.add_handle(write=True, fd=fd)
        log.debug("staging %r as %s", f, spool_id)
        return f

    async def open(self, f: StagedFile, *, write: bool) -> None:
        """Count one more open handle of a STAGED or PENDING *f*.

        Several handles may write (two SQLite connections, say): the file ends when the last
        one closes (``fs.py``). Raises LocalError: EACCES when *write* and the content is
        committed; ESTALE when *f* has landed or is gone (read the
        artifact instead).
        """
        async with f.lock:
            if write and f.state is not FileState.STAGED:
                raise LocalError(
                    f"{f.name} is committed and can no longer change", errno=errno.EACCES
                )
            fd = None
            if f.fd is None:
                if f.state not in (FileState.STAGED, FileState.PENDING):
                    raise LocalError(f"{f.name} is no longer in the spool", errno=errno.ESTALE)
                flags = os.O_RDWR if f.state is FileState.STAGED else os.O_RDONLY
                fd = await trio.to_thread.run_sync(_open_fd, f.data, flags)
            f.add_handle(write=write, fd=fd)

    async def release(self, f: StagedFile, *, write: bool) -> None:
        """Forget one handle (opened by ``create`` or ``open``); the last one closes the fd
        (once the queued writes are on disk)."""
        f.drop_handle(write=write)
        if f.idle:
            async with f.lock:
                await f.writes.wait_written()
                fd = f.take_fd() if f.idle else None
                if fd is not None:
                    await trio.to_thread.run_sync(os.close, fd)

    async def write(self, f: StagedFile, offset: int, data: bytes) -> int:
        """Write *data* at *offset* of a STAGED *f*; return ``len(data)`` (write-behind: see
        the module docstring).

        Raises LocalError: EBADF once *f* is committed; ENOSPC when the spool is full; the
        error of an earlier queued write that failed.
        """
        self._writes += 1
        async with f.lock:
            fd = f.writable_fd()
            end = offset + len(data)
            grow = max(0, end - f.size)
            if not self._write_behind.queue(f, fd, offset, data, grow):
                # not known to fit: write now, measuring the free space
                await f.writes.wait_written()
                await self._write_behind.write_now(f, f.writable_fd(), offset, data, grow)
            f.size = max(f.size, end)
            f.mtime = time.time()
            await f.writes.wait_written(WRITE_BEHIND)
        return len(data)

    async def truncate(self, f: StagedFile, size: int) -> None:
        """Set the size of a STAGED *f* (zeros when it grows). Raises like ``write``."""
        async with f.lock:
            await f.writes.wait_written()
            fd = f.writable_fd()
            grow = max(0, size - f.size)
            await trio.to_thread.run_sync(self._spool.truncate, fd, size, grow)
            f.writes.truncated(size)
            f.size = size
            f.mtime = time.time()

    async def read(self, f: StagedFile, offset: int, size: int) -> bytes:
        """Read the local content of *f* through an open handle: exactly *size* bytes unless
        the end of the file comes first. Raises LocalError(EBADF) without an open handle."""
        await f.writes.wait_written()
        fd = f.fd
        if fd is None:
            raise LocalError(f"{f.name} is not open", errno=errno.EBADF)
        length = min(size, f.size - offset)
        if length <= 0:
            return b""
        return await trio.to_thread.run_sync(read_at, fd, offset, length)

    async def edit(
        self,
        run_id: str,
        name: str,
        replaced: Artifact,
        *,
        keep_content: bool,
        category: str = "input",
    ) -> StagedFile:
        """Start a file that replaces the input *replaced* (called *name*) when it lands: it
        comes back open once for writing, empty or (*keep_content*) holding the artifact's
        content (``edits.py``). The caller checked that the change is allowed.

        Raises like :meth:`create`, and as ``edits.download_into`` when the content cannot
        be fetched (nothing is kept then).
        """
        f = await self.create(run_id, name, category)
        f.replaces[replaced.id] = replaced.checksum
        if keep_content:
            try:
                async with f.lock:
                    fd = f.writable_fd()
                    size = await download_into(
                        self._client, self._settings, self._spool, replaced, fd
                    )
                    f.writes.rewritten()
                    f.size = size
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self.release(f, write=True)
                    await self.discard(f)
                raise
        log.info("changing %s of run %s (artifact %s)", name, run_id, replaced.id)
        return f

    async def checkpoint(self, f: StagedFile) -> None:
        """Make the content of the STAGED *f* durable as it is now (FUSE ``fsync``) without
        ending it: after a crash, this content is uploaded (``spool.py`` "Checkpoints").
        Nothing to do once committed (journaled already) or discarded.

        Raises LocalError (ENOSPC, EIO) when the spool cannot keep the copy, or the error
        of an earlier queued write.
        """
        async with f.lock:
            if f.state is not FileState.STAGED:
                return
            await f.writes.wait_written()
            f.writes.raise_error()
            base = f.checkpoint or JournalRecord(
                id=f.spool_id,
                run_id=f.run_id,
                category=f.category,
                name=f.name,
                checksum="",
                size=f.size,
                created=datetime.now(UTC),
            )
            base = replace(
                base, name=f.name, replaces=tuple(f.replaces), replaced_checksums=dict(f.replaces)
            )
            f.checkpoint = await trio.to_thread.run_sync(self._spool.checkpoint, base, f.size)
        log.debug("fsync of %r: kept as checkpoint %d", f, f.checkpoint.checkpoint)

    def recently_landed(self, f: StagedFile) -> bool:
        """True when *f* landed less than LANDED_RETENTION seconds ago: its writer may still
        rename or remove it as a transient file (SEMANTICS.md "Writing")."""
        return f.state is FileState.LANDED and time.monotonic() - f.landed_at < LANDED_RETENTION

    async def sharing_problem(self, run_id: str, artifact: Artifact) -> str | None:
        """Why the artifact *artifact* of run *run_id* cannot be replaced or deleted (it is
        attached to another run too, or deletes are off), or None (asks the server)."""
        return await sharing_problem(self._client, self._settings, artifact.id, run_id)

    async def delete(self, run_id: str, name: str, artifact: Artifact) -> None:
        """Delete the artifact *artifact* of run *run_id*, shown as *name* (FUSE ``unlink``
        of an input), if that is safe (``deletes.delete_now``: else LocalError(EPERM))."""
        await delete_now(self._client, self._settings, run_id, name, artifact, self._spool.root)

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
            async with f.lock:
                if f.state is FileState.STAGED:
                    await self._journal(f)
        if f.state is FileState.PENDING:
            return await self._lander.land(f)
        return f.artifact

    async def _journal(self, f: StagedFile) -> None:
        """STAGED -> PENDING (f.lock held): seal the content, write the record, move it."""
        await f.writes.wait_written()
        f.writes.raise_error()
        hasher, start = f.writes.take_hash()
        self._bytes_rehashed += f.size - start
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
            replaces=tuple(f.replaces),
            replaced_checksums=dict(f.replaces),
        )
        await trio.to_thread.run_sync(self._spool.commit, record)
        f.commit(record, self._spool.data_path(f.spool_id))
        self._lander.track(f, retry_now=False)
        log.debug("committed %r: %d bytes, sha256 %s", f, f.size, checksum)

    def _landed(self, f: StagedFile) -> None:
        if self._live.get(f.key) is f:
            del self._live[f.key]
        if self._on_landed is not None:
            self._on_landed(f)

    # -- renaming and discarding ------------------------------------------------------------

    async def rename(
        self, f: StagedFile, new_name: str, replaced: dict[str, str] | None = None
    ) -> None:
        """Give *f* the name *new_name* in the same run and category (FUSE ``rename``);
        *replaced* maps artifacts that had the new name (and that the caller allowed to go)
        to their checksums: they are deleted once *f* has landed under it.

        Not attached yet (STAGED or PENDING): only the name changes (a pending record is
        rewritten; an artifact created under the old name but never attached stays unused).
        Attached (LANDED, or PENDING after the attach): the content is journaled again under
        the new name, replacing the old artifact, and landed at once (the server knows the
        checksum, so no bytes move); the old artifact is deleted once the new one is
        attached. The rename stands once journaled; a failed landing is retried like any.

        A rename clears a final refusal: the file is attempted again under the new name.

        Raises LocalError: EINVAL (name); EEXIST when *new_name* is being written or
        uploaded; EXDEV when *f* landed too long ago for its content to be kept (LANDED_RETENTION
        in landing.py), or is attached while ``settings.delete_artifacts`` is off (the old
        name could not be deleted); ENOENT when *f* was discarded.
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
            async with f.attempt_lock, f.lock:
                reland = await self._rename_locked(f, new_name, replaced or {})
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

    async def _rename_locked(self, f: StagedFile, new_name: str, replaced: dict[str, str]) -> bool:
        """Rename under both locks; True when *f* must land again under the new name."""
        record = f.record
        if f.state is FileState.STAGED:
            f.rename(new_name)
            f.replaces.update(replaced)
            if f.checkpoint is not None:
                f.checkpoint = await trio.to_thread.run_sync(
                    self._spool.checkpoint, replace(f.checkpoint, name=new_name), f.size
                )
            return False
        if f.attached:
            self._check_deletes(f)
        if f.state is FileState.PENDING and record is not None:
            attached = f.attached
            replaces = record.replaces + tuple(replaced)
            if attached and record.artifact_id:
                replaces += (record.artifact_id,)
            renamed = replace(
                record,
                name=new_name,
                artifact_id=None,
                stage="new",
                replaces=replaces,
                replaced_checksums={**record.replaced_checksums, **replaced},
                failed="",
            )
            await trio.to_thread.run_sync(self._spool.save, renamed)
            f.update_record(renamed)
            return attached or bool(replaced)
        if f.state is FileState.LANDED and f.artifact is not None:
            record = JournalRecord(
                id=f.spool_id,
                run_id=f.run_id,
                category=f.category,
                name=new_name,
                checksum=f.checksum,
                size=f.size,
                created=datetime.now(UTC),
                replaces=_own_artifact(f) + tuple(replaced),
                replaced_checksums=dict(replaced),
            )
            await trio.to_thread.run_sync(self._spool.relaunch, record)
            f.relaunch(record, self._spool.data_path(f.spool_id))
            self._lander.track(f, retry_now=False)
            return True
        raise LocalError(f"{f.name} no longer exists", errno=errno.ENOENT)

    def _check_deletes(self, f: StagedFile) -> None:
        """Refuse (EXDEV) a rename of the attached *f* when deletes are off."""
        if not self._settings.delete_artifacts:
            raise LocalError(
                f"{f.name} is uploaded, and renaming it would delete the artifact under its "
                "old name, which this mount does not do (--no-delete); copy it instead",
                errno=errno.EXDEV,
            )

    async def discard(self, f: StagedFile, *, only_failed: bool = False) -> None:
        """Forget *f* before it lands (FUSE ``unlink``); nothing of it is uploaded.

        An upload in progress is cancelled. Open handles keep working on the unlinked
        content. Raises LocalError(EPERM) when *f* is already an artifact of the run, and
        with *only_failed* LocalError(EAGAIN, ``mailbox.NOT_FAILED``) when *f* is not failed
        (a rename or a retry cleared that).
        """
        if not f.attached:
            self._lander.cancel_attempt(f)
        async with f.attempt_lock, f.lock:
            if f.state is FileState.DISCARDED:
                return
            if only_failed and not f.failed:
                raise LocalError(mailbox.NOT_FAILED, errno=errno.EAGAIN)
            if f.attached:
                raise LocalError(
                    f"{f.name} is uploaded; artifacts cannot be deleted", errno=errno.EPERM
                )
            if f.state is FileState.STAGED:
                await trio.to_thread.run_sync(self._spool.drop_staged, f.spool_id)
            else:
                await trio.to_thread.run_sync(self._spool.drop, f.spool_id)
                self._lander.forget(f)
            f.discard()
            if self._live.get(f.key) is f:
                del self._live[f.key]
        log.info("discarded %s in run %s before upload", f.name, f.run_id)

    async def abandon(self, f: StagedFile, reason: str) -> None:
        """Never upload the STAGED *f* (its writer was killed before it closed it): keep its
        content in the spool's abandoned/ (nothing is lost; ``simvuefs status`` counts it)
        and forget it, as ``discard`` does. Open handles keep working on the content.
        Raises LocalError when the spool cannot move it (it stays STAGED)."""
        async with f.attempt_lock, f.lock:
            if f.state is not FileState.STAGED:
                return
            await f.writes.wait_written()
            kept = await trio.to_thread.run_sync(self._spool.abandon_staged, f.spool_id)
            f.discard()
            if self._live.get(f.key) is f:
                del self._live[f.key]
        log.warning(
            "%s of run %s is not uploaded: %s; its %d bytes are kept as %s",
            f.name,
            f.run_id,
            reason,
            f.size,
            kept,
        )

    async def apply(self, request: mailbox.Request) -> mailbox.Answer:
        """Apply a host-side command's request (``mailbox.py``): ``retry`` clears the final
        refusal of each pending file and attempts it now; ``drop`` discards each pending file
        not attached yet (with ``only_failed``: still failed), and tells ``on_dropped``."""
        done: list[str] = []
        skipped: dict[str, str] = {}
        for spool_id in request.ids:
            f = self._lander.file(spool_id)
            if f is None:
                skipped[spool_id] = mailbox.NOT_PENDING
            elif request.action == "retry":
                await self._lander.retry(f)
                done.append(spool_id)
            elif f.attached:
                skipped[spool_id] = mailbox.ATTACHED
            elif request.only_failed and not f.failed:
                skipped[spool_id] = mailbox.NOT_FAILED  # no attempt of it is cancelled
            else:
                try:
                    await self.discard(f, only_failed=request.only_failed)
                except LocalError as exc:
                    skipped[spool_id] = str(exc)
                    continue
                if self._on_dropped is not None:
                    self._on_dropped(f)
                done.append(spool_id)
        return mailbox.Answer(tuple(done), skipped)

    # -- start and stop --------------------------------------------------------------------

    def _reserve(self, key: tuple[str, str, str], f: StagedFile) -> None:
        if key in self._live:
            raise LocalError(
                f"{key[2]} in run {key[0]} is already being written or uploaded",
                errno=errno.EEXIST,
            )
        self._live[key] = f

    async def resume(self) -> None:
        """Load the journal; every pending upload is attempted again at once (at start,
        by ``open_uploader``)."""
        try:
            records = await trio.to_thread.run_sync(self._spool.recover)
            await trio.to_thread.run_sync(mailbox.tidy, self._spool.root)
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

    async def drain(self) -> None:
        """Let the lander drain, report files never closed, close what is still open (at
        exit, by ``open_uploader``)."""
        await self._lander.drain()
        for f in self._live.values():
            await f.writes.wait_written()
        unfinished = [f for f in self._live.values() if f.state is FileState.STAGED]
        if unfinished:
            log.warning(
                "%d file(s) still being written were never closed and are not uploaded: %s",
                len(unfinished),
                ", ".join(f"{f.run_id}/{f.category}/{f.name}" for f in unfinished[:10]),
            )
        for f in [*self._live.values(), *self._lander.pending()]:
            fd = f.take_fd()
            if fd is not None:
                os.close(fd)
        log.debug("uploader statistics at exit: %s", self.statistics())


def _check_name(name: str, category: str) -> None:
    if category not in CATEGORIES:
        raise LocalError(f"unknown artifact category {category!r}", errno=errno.EINVAL)
    check_artifact_name(name)


def _own_artifact(f: StagedFile) -> tuple[str, ...]:
    """The artifact of the LANDED *f*, as the one a rename replaces, if this mount created
    it: the server's record of it has the name it was created with. Otherwise (a server
    that answered the create with an artifact it had already) it is kept: ()."""
    artifact = f.artifact
    assert artifact is not None
    if artifact.name == f.name:
        return (artifact.id,)
    log.warning(
        "run %s: artifact %s is called %r on the server, not %r: not created by this mount, "
        "so a rename keeps it",
        f.run_id,
        artifact.id,
        artifact.name,
        f.name,
    )
    return ()


def _open_fd(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise local_error(exc, f"cannot open {path}") from None

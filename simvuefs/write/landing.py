"""Landing pending uploads as artifacts: the official client's sequence, journaled step by
step, retried in the background, drained at shutdown.

An attempt follows protocol 4.2: create the artifact; upload the content unless the server
answers ``url: null`` (it knows the checksum: dedup); mark it uploaded; attach it to the
run; read it back (the official client's final GET); then delete the artifacts that a
rename replaced. The journal record (``spool.py``) stores the stage reached, and the next
attempt resumes after it: a retry never attaches a second artifact. After a failed create
or upload it starts over with a new artifact; the abandoned one was never attached, so no
run shows it.

Each attempt has a deadline, :func:`commit_deadline`. A failed attempt is counted in the
record and logged, and one background loop per file retries with exponential backoff
(``upload_retry_initial`` doubling up to ``upload_retry_max``, times a random factor in
[0.5, 1)); at most BACKGROUND_UPLOADS background attempts run at once.
"""

from __future__ import annotations

import logging
import mimetypes
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import PurePosixPath

import trio

from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import MIB, Settings
from simvuefs.errors import DeadlineExceeded, NotFound, SimvueError, StatusError
from simvuefs.models import Artifact
from simvuefs.write.spool import JournalRecord, Spool
from simvuefs.write.staged import FileState, StagedFile

log = logging.getLogger(__name__)

# Attempt deadline = request_timeout + the official client's upload timeout (10 s + 1 s per
# MiB, protocol 4.2): a slow but moving upload of a big file is not cut off.
UPLOAD_BASE_SECONDS = 10.0
UPLOAD_SECONDS_PER_MIB = 1.0
# Background attempts running at once (attempts made by commit are not limited).
BACKGROUND_UPLOADS = 2
# How long landed content stays in the spool, so that a rename (rsync's temp-then-rename)
# can land it again under the new name even if the server wants the bytes again.
LANDED_RETENTION = 30.0
# Statuses of a DELETE that retrying will not change: the old name stays, with a warning.
_DELETE_REFUSED = (400, 403, 405, 501)


def commit_deadline(size: int, settings: Settings) -> float:
    """Seconds one upload attempt of *size* bytes may take, every step included."""
    return settings.request_timeout + UPLOAD_BASE_SECONDS + size / MIB * UPLOAD_SECONDS_PER_MIB


def original_path(record: JournalRecord) -> str:
    """The ``original_path`` sent for an upload: non-empty, so clients see a file artifact."""
    return f"simvuefs://{record.run_id}/{record.category}/{record.name}"


def mime_type(name: str) -> str:
    """Guess like the official client: ``mimetypes``, else ``application/octet-stream``."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class Lander:
    """Lands the PENDING files it tracks (module docstring).

    *on_landed* is called in the trio thread after each landing (foreground or background);
    its exceptions are logged. Background tasks run in *nursery*.
    """

    def __init__(
        self,
        client: SimvueBackend,
        settings: Settings,
        spool: Spool,
        nursery: trio.Nursery,
        on_landed: Callable[[StagedFile], None],
    ) -> None:
        self._client = client
        self._settings = settings
        self._spool = spool
        self._nursery = nursery
        self._on_landed = on_landed
        self._pending: dict[str, StagedFile] = {}  # by spool id
        self._limiter = trio.CapacityLimiter(BACKGROUND_UPLOADS)
        self._inflight = 0
        self._inflight_changed = trio.lowlevel.ParkingLot()
        self._closing = False
        self.landed = 0
        self.failed = 0
        self.bytes_uploaded = 0

    def pending(self) -> list[StagedFile]:
        """The PENDING files, in no particular order."""
        return list(self._pending.values())

    def track(self, f: StagedFile, *, retry_now: bool) -> None:
        """Take charge of the PENDING *f*; with *retry_now*, its background loop starts an
        attempt at once (a record resumed at start)."""
        self._pending[f.spool_id] = f
        if retry_now:
            self.retry_now(f)

    def retry_now(self, f: StagedFile) -> None:
        """Make the background loop of *f* attempt at once (starting it if needed)."""
        self._ensure_retry(f, immediate=True)

    def forget(self, f: StagedFile) -> None:
        """Stop tracking *f* (it was discarded); its loop ends when it next wakes."""
        self._pending.pop(f.spool_id, None)
        f._wake.set()

    def cancel_attempt(self, f: StagedFile) -> None:
        """Cancel the upload attempt of *f* in progress, if any (discard)."""
        if f._attempt_scope is not None:
            f._attempt_scope.cancel()

    async def land(self, f: StagedFile) -> Artifact | None:
        """Make one upload attempt for a PENDING *f*, or wait for the one in progress.

        Returns the artifact (also when *f* had landed already), or None when *f* was
        discarded meanwhile. A failure is journaled, logged and re-raised, and the
        background loop retries.
        """
        async with f._attempt_lock:
            if f.state is not FileState.PENDING:
                return f.artifact
            self._inflight += 1
            f._uploading = True
            try:
                with trio.CancelScope() as f._attempt_scope:
                    try:
                        artifact = await self._attempt(f)
                        with trio.CancelScope(shield=True):
                            await self._retire(f, artifact)
                        return artifact
                    except Exception as exc:
                        await self._note_failure(f, exc)
                        raise
                return None  # cancelled by cancel_attempt: discarded
            finally:
                f._attempt_scope = None
                f._uploading = False
                self._inflight -= 1
                self._inflight_changed.unpark_all()

    async def _attempt(self, f: StagedFile) -> Artifact:
        """Run the upload sequence from the stage the journal records, with a deadline."""
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
                self.bytes_uploaded += record.size
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
            f._wake.set()
            self.landed += 1
        self._nursery.start_soon(self._expire_landed, f, f._generation)
        log.info(
            "uploaded %s to run %s as artifact %s (%d bytes)", f.name, f.run_id, artifact.id, f.size
        )
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
        """Count a failed attempt in the journal and make sure the retry loop runs."""
        self.failed += 1
        assert f._record is not None
        reason = str(exc)[:500] or type(exc).__name__
        record = replace(f._record, attempts=f._record.attempts + 1, last_error=reason)
        try:
            await self._save(f, record)
        except SimvueError as save_error:
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
                        await self.land(f)
                    except Exception:
                        pass  # land logged it and counted the attempt; keep retrying
                if f.state is not FileState.PENDING:
                    return
                delay = self._backoff(f.attempts)
        finally:
            f._retrying = False

    def _backoff(self, attempts: int) -> float:
        settings = self._settings
        raw = settings.upload_retry_initial * 2.0 ** min(max(attempts - 1, 0), 32)
        return min(raw, settings.upload_retry_max) * random.uniform(0.5, 1.0)

    async def drain(self) -> None:
        """Stop retrying; give attempts in progress ``shutdown_upload_wait`` seconds to
        finish; log what stays pending for the next start."""
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

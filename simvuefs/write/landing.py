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
[0.5, 1); at least the ``Retry-After`` of a 429); at most BACKGROUND_UPLOADS background
attempts run at once. A final refusal (``refusal.py``: a 4xx no retry will change) is
journaled as ``failed`` with the server's message and raised as UploadRefused; the file
is not attempted again (its loop ends, ``land`` raises the journaled refusal without a
request) until :meth:`Lander.retry` or a rename clears it.

Deletes of the artifacts a rename replaced (``record.replaces``) are ``deletes.py``'s.

State: the :class:`Lander` keeps one :class:`Landing` per PENDING file (its attempt in
progress and its retry loop), from ``track`` until the file lands or is discarded; a file
that lands again after a rename gets a new one, and a retry loop ends once its Landing is
no longer the file's current one. The journal record (stage, attempts, last error) is the
file's (``StagedFile.record``); only :class:`Lander` saves it during an attempt.
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import PurePosixPath

import trio

from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import MIB, Settings
from simvuefs.errors import DeadlineExceeded, RateLimited, SimvueError, UploadRefused
from simvuefs.models import Artifact
from simvuefs.write.deletes import delete_replaced
from simvuefs.write.refusal import final_errno
from simvuefs.write.spool import JournalRecord, Spool
from simvuefs.write.staged import FileState, PendingUpload, StagedFile

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


def _refusal(record: JournalRecord) -> UploadRefused:
    """The UploadRefused of the failed *record* (journaled: also after a remount)."""
    return UploadRefused(
        f"the server refused {record.category}/{record.name} of run {record.run_id} for "
        f"good: {record.last_error}",
        errno=record.failed_errno or errno.EIO,
    )


def commit_deadline(size: int, settings: Settings) -> float:
    """Seconds one upload attempt of *size* bytes may take, every step included."""
    return settings.request_timeout + UPLOAD_BASE_SECONDS + size / MIB * UPLOAD_SECONDS_PER_MIB


def original_path(record: JournalRecord) -> str:
    """The ``original_path`` sent for an upload: non-empty, so clients see a file artifact."""
    return f"simvuefs://{record.run_id}/{record.category}/{record.name}"


def mime_type(name: str) -> str:
    """Guess like the official client: ``mimetypes``, else ``application/octet-stream``."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def backoff(attempts: int, settings: Settings) -> float:
    """Seconds to wait after *attempts* failed attempts before the next (module docstring)."""
    raw = settings.upload_retry_initial * 2.0 ** min(max(attempts - 1, 0), 32)
    return min(raw, settings.upload_retry_max) * random.uniform(0.5, 1.0)


class Landing:
    """The landing of one PENDING *file*: its attempt in progress and its retry loop.

    *asked_wait* is the ``Retry-After`` of the last failed attempt's 429 (0 if none).
    *uploading* is True while an attempt runs (one at a time: ``file.attempt_lock``), in a
    scope that :meth:`cancel_attempt` cancels. *retrying* is True while the background loop
    runs; it sleeps between attempts in :meth:`sleep` until the delay ends or :meth:`wake`.
    """

    def __init__(self, file: StagedFile) -> None:
        self.file = file
        self.uploading = False
        self.retrying = False
        self.asked_wait = 0.0
        self._scope: trio.CancelScope | None = None
        self._wake = trio.Event()

    def delay(self, settings: Settings) -> float:
        """Seconds to wait before the next attempt: the backoff, or what the server asked."""
        return max(backoff(self.file.attempts, settings), self.asked_wait)

    def attempt_started(self, scope: trio.CancelScope) -> None:
        """An attempt runs in *scope*."""
        self.uploading = True
        self._scope = scope

    def attempt_ended(self) -> None:
        """The attempt is over (landed, failed or cancelled)."""
        self._scope = None
        self.uploading = False

    def cancel_attempt(self) -> None:
        """Cancel the attempt in progress, if any."""
        if self._scope is not None:
            self._scope.cancel()

    def wake(self) -> None:
        """End the retry loop's current sleep now."""
        self._wake.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep *seconds*, or until :meth:`wake` (a wake before this call is forgotten)."""
        self._wake = trio.Event()
        with trio.move_on_after(seconds):
            await self._wake.wait()


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
        self._pending: dict[str, Landing] = {}  # by spool id
        self._limiter = trio.CapacityLimiter(BACKGROUND_UPLOADS)
        self._inflight = 0
        self._inflight_changed = trio.lowlevel.ParkingLot()
        self._closing = False
        self.landed = 0
        self.failed = 0
        self.bytes_uploaded = 0

    def pending(self) -> list[StagedFile]:
        """The PENDING files, in no particular order."""
        return [landing.file for landing in self._pending.values()]

    def file(self, spool_id: str) -> StagedFile | None:
        """The PENDING file with this spool id, if any."""
        landing = self._pending.get(spool_id)
        return None if landing is None else landing.file

    def uploads(self) -> list[PendingUpload]:
        """A snapshot of the pending uploads, in no particular order."""
        return [
            PendingUpload.from_record(landing.file.record, landing.uploading)
            for landing in self._pending.values()
            if landing.file.record is not None
        ]

    def track(self, f: StagedFile, *, retry_now: bool) -> None:
        """Take charge of the PENDING *f*; with *retry_now*, its background loop starts an
        attempt at once (a record resumed at start)."""
        self._pending[f.spool_id] = Landing(f)
        if retry_now and not f.failed:
            self.retry_now(f)

    def retry_now(self, f: StagedFile) -> None:
        """Make the background loop of the PENDING *f* attempt at once (starting it if
        needed)."""
        self._ensure_retry(self._pending[f.spool_id], immediate=True)

    async def retry(self, f: StagedFile) -> None:
        """Clear the final refusal of the PENDING *f*, if any (journaled), and attempt it at
        once in the background (``simvuefs pending retry``). Never waits for an attempt in
        progress: a file being uploaded just gets its next attempt sooner if this one fails.
        """
        if f.failed:
            async with f.attempt_lock:  # free: a failed file's land() makes no request
                record = f.record
                if f.state is FileState.PENDING and record is not None and record.failed:
                    await self._save(f, record.retried())
                    log.info("retrying the upload of %s to run %s", f.name, f.run_id)
        if f.state is FileState.PENDING and f.spool_id in self._pending:
            self.retry_now(f)

    def forget(self, f: StagedFile) -> None:
        """Stop tracking *f* (it was discarded); its loop ends when it next wakes."""
        landing = self._pending.pop(f.spool_id, None)
        if landing is not None:
            landing.wake()

    def cancel_attempt(self, f: StagedFile) -> None:
        """Cancel the upload attempt of *f* in progress, if any (discard)."""
        landing = self._pending.get(f.spool_id)
        if landing is not None:
            landing.cancel_attempt()

    async def land(self, f: StagedFile) -> Artifact | None:
        """Make one upload attempt for a PENDING *f*, or wait for the one in progress.

        Returns the artifact (also when *f* had landed already), or None when *f* was
        discarded meanwhile. A failure is journaled, logged and re-raised, and the
        background loop retries.
        """
        async with f.attempt_lock:
            if f.state is not FileState.PENDING:
                return f.artifact
            if f.record is not None and f.record.failed:
                raise _refusal(f.record)
            landing = self._pending[f.spool_id]
            self._inflight += 1
            try:
                with trio.CancelScope() as scope:
                    landing.attempt_started(scope)
                    try:
                        artifact = await self._attempt(f)
                        with trio.CancelScope(shield=True):
                            await self._retire(f, artifact)
                        return artifact
                    except Exception as exc:
                        refused = await self._note_failure(landing, exc)
                        if refused is not None:
                            raise refused from exc
                        raise
                return None  # cancelled by cancel_attempt: discarded
            finally:
                landing.attempt_ended()
                self._inflight -= 1
                self._inflight_changed.unpark_all()

    async def _attempt(self, f: StagedFile) -> Artifact:
        """Run the upload sequence from the stage the journal records, with a deadline."""
        assert f.record is not None
        seconds = commit_deadline(f.record.size, self._settings)
        with trio.move_on_after(seconds):
            return await self._upload_steps(f)
        raise DeadlineExceeded(f"upload of {f.name} did not finish within {seconds:.0f} s")

    async def _upload_steps(self, f: StagedFile) -> Artifact:
        record = f.record
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
            await delete_replaced(
                self._client, self._settings, record.replaces[0], record, self._spool.root
            )
            record = await self._save(f, replace(record, replaces=record.replaces[1:]))
        return artifact

    async def _save(self, f: StagedFile, record: JournalRecord) -> JournalRecord:
        await trio.to_thread.run_sync(self._spool.save, record)
        f.update_record(record)
        return record

    async def _retire(self, f: StagedFile, artifact: Artifact) -> None:
        """PENDING -> LANDED: keep the content briefly (for renames), drop the record."""
        async with f.lock:
            await trio.to_thread.run_sync(self._spool.land, f.spool_id)
            f.retire(artifact, self._spool.landed_path(f.spool_id))
            self._pending.pop(f.spool_id).wake()
            self.landed += 1
        self._nursery.start_soon(self._expire_landed, f, f.generation)
        log.info(
            "uploaded %s to run %s as artifact %s (%d bytes)", f.name, f.run_id, artifact.id, f.size
        )
        try:
            self._on_landed(f)
        except Exception:
            log.exception("the landing callback failed for %r", f)

    async def _expire_landed(self, f: StagedFile, generation: int) -> None:
        await trio.sleep(LANDED_RETENTION)
        async with f.lock:
            if f.state is FileState.LANDED and f.generation == generation:
                await trio.to_thread.run_sync(self._spool.drop_landed, f.spool_id)

    async def _note_failure(self, landing: Landing, exc: Exception) -> UploadRefused | None:
        """Count a failed attempt in the journal; make sure the retry loop runs, or, for a
        final refusal, mark the file failed and return the UploadRefused to raise."""
        self.failed += 1
        f = landing.file
        assert f.record is not None
        asked = (exc.retry_after or 0.0) if isinstance(exc, RateLimited) else 0.0
        landing.asked_wait = min(asked, self._settings.upload_retry_max)
        reason = str(exc)[:500] or type(exc).__name__
        # Once attached, the file is the run's: what fails after (the read-back, the deletes
        # of replaced names) is retried, never a refusal of the file.
        code = None if f.record.stage == "attached" else final_errno(exc)
        failed = "" if code is None else errno.errorcode[code]
        record = replace(f.record, attempts=f.record.attempts + 1, last_error=reason, failed=failed)
        try:
            await self._save(f, record)
        except SimvueError as save_error:
            f.update_record(record)
            log.error("%s (the spool keeps the content)", save_error)
        if code is not None:
            log.error(
                "upload of %s to run %s refused for good: %s; not retried, kept in %s "
                "('simvuefs pending' retries, exports or drops it)",
                f.name,
                f.run_id,
                reason,
                self._spool.pending_dir,
            )
            return _refusal(record)
        log.warning(
            "upload of %s to run %s failed (attempt %d): %s; retrying in the background",
            f.name,
            f.run_id,
            record.attempts,
            reason,
            exc_info=not isinstance(exc, SimvueError),
        )
        self._ensure_retry(landing, immediate=False)
        return None

    # -- background retries ----------------------------------------------------------------

    def _ensure_retry(self, landing: Landing, *, immediate: bool) -> None:
        if landing.retrying:
            if immediate:
                landing.wake()
        elif not self._closing:
            landing.retrying = True
            self._nursery.start_soon(self._retry_loop, landing, immediate)

    def _should_retry(self, landing: Landing) -> bool:
        """True while *landing* is the current one of a PENDING file and we are not closing."""
        f = landing.file
        return (
            not self._closing
            and f.state is FileState.PENDING
            and not f.failed
            and self._pending.get(f.spool_id) is landing
        )

    async def _retry_loop(self, landing: Landing, immediate: bool) -> None:
        f = landing.file
        try:
            delay = 0.0 if immediate else landing.delay(self._settings)
            while True:
                await landing.sleep(delay)
                if not self._should_retry(landing):
                    return
                async with self._limiter:
                    if not self._should_retry(landing):
                        return
                    try:
                        await self.land(f)
                    except Exception:
                        pass  # land logged it and counted the attempt; keep retrying
                if not self._should_retry(landing):
                    return
                delay = landing.delay(self._settings)
        finally:
            landing.retrying = False

    async def drain(self) -> None:
        """Stop retrying; give attempts in progress ``shutdown_upload_wait`` seconds to
        finish; log what stays pending for the next start."""
        self._closing = True
        for landing in self._pending.values():
            landing.wake()
        with trio.move_on_after(self._settings.shutdown_upload_wait):
            while self._inflight:
                await self._inflight_changed.park()
        if self._pending:
            refused = sum(1 for landing in self._pending.values() if landing.file.failed)
            log.warning(
                "%d upload(s) still pending in %s; they resume at the next mount%s",
                len(self._pending),
                self._spool.pending_dir,
                f", except {refused} refused for good ('simvuefs pending')" if refused else "",
            )

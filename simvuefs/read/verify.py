"""ContentVerifier: what a handle's reads return, checked against the artifact's sha256.

A handle whose reads cover its content in order, from byte 0 to the end, has what it
returned checked against the artifact's sha256 (when the server gave one); each such handle
has a :class:`ContentCheck`. Reads may complete slightly out of order (the kernel sends
several at once): pieces up to ``VERIFY_BACKLOG`` bytes beyond the verified prefix wait for
the gap to fill; a read further away (a seek, random access) ends the check. Hashing runs
in worker threads in ``HASH_BATCH`` batches, off the read path; a read waits only when more
than ``VERIFY_BACKLOG`` bytes of its handle, or more than ``HASH_BACKLOG_TOTAL`` bytes of all
handles, are queued or being hashed (then its handle's queue is hashed at once and the read
waits for that). The read that completes the content waits for the digest: on a mismatch
:meth:`ContentVerifier.feed` raises :class:`IntegrityError`, logs the error, and the content
is *suspect* until a later handle verifies it (:meth:`ContentVerifier.trusts`).

Invariants
    The hash budget (bytes queued in any check or being hashed, over all handles) is owned
    by :class:`ContentVerifier` and changes only in :meth:`~ContentVerifier.feed` (queued),
    :meth:`~ContentVerifier.forget` (dropped) and its hashing task (hashed). A check is fed
    only until it *ended*: when its content is complete, or it was forgotten (read out of
    order, or its handle released). At most one hashing task runs per check.

Memory
    At most ``VERIFY_BACKLOG`` of out-of-order pieces per handle, and about
    ``HASH_BACKLOG_TOTAL`` plus one read per handle waiting for hashing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

import trio

from simvuefs.config import MIB
from simvuefs.errors import IntegrityError
from simvuefs.models import Artifact

log = logging.getLogger(__name__)

VERIFY_BACKLOG = 16 * MIB
"""Per verified handle: the most bytes held beyond the verified prefix (out-of-order reads)
and the most queued for hashing before a read waits for the hasher."""
HASH_BATCH = 8 * MIB
"""Bytes collected before a worker thread hashes them (one thread hop per batch)."""
HASH_BACKLOG_TOTAL = 32 * MIB
"""Over all handles: bytes queued or being hashed beyond which each read that adds to them
starts its handle's hashing at once and waits for it (many concurrent readers would
otherwise hold up to HASH_BATCH each)."""
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class VerifierStats:
    """Counters of a :class:`ContentVerifier`: see :class:`simvuefs.read.reader.ReaderStats`."""

    verified: int
    verify_failures: int
    hashed_bytes: int
    hash_backlog_peak: int


class ContentCheck:
    """The sha256 of one handle's content (*size* bytes), fed in order as its reads return it.

    The first ``fed`` bytes are queued or hashed; pieces that arrived before the gap in front
    of them was filled are held aside. The queue is handed to a hashing task in batches.
    """

    __slots__ = (
        "_digest",
        "_early",
        "_early_bytes",
        "_ended",
        "_fed",
        "_hashing",
        "_idle",
        "_queue",
        "_queued",
        "artifact",
        "expected",
        "key",
        "size",
    )

    def __init__(self, artifact: Artifact, key: str, size: int) -> None:
        self.artifact = artifact
        self.key = key
        self.size = size
        self.expected = artifact.checksum.lower()
        self._digest = hashlib.sha256()
        self._fed = 0
        self._early: dict[int, bytes] = {}
        self._early_bytes = 0
        self._queue: list[bytes] = []
        self._queued = 0
        self._hashing = False
        self._idle = trio.Event()
        self._idle.set()
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once the content is complete or the check was given up: feed no more."""
        return self._ended

    @property
    def complete(self) -> bool:
        """True once the whole content is queued or hashed."""
        return self._fed == self.size

    @property
    def queued(self) -> int:
        """Bytes waiting for the hashing task."""
        return self._queued

    @property
    def hashing(self) -> bool:
        """True while a hashing task runs for this check."""
        return self._hashing

    def accept(self, off: int, data: bytes) -> bool:
        """Take the bytes a read returned at *off*; False if the handle is not reading in
        order (verification is then impossible)."""
        end = off + len(data)
        if end <= self._fed:
            return True  # read again: already fed
        if off > self._fed:
            held = self._early.get(off)
            grow = len(data) - (len(held) if held is not None else 0)
            if end - self._fed > VERIFY_BACKLOG or self._early_bytes + grow > VERIFY_BACKLOG:
                return False
            if grow > 0:
                self._early[off] = data
                self._early_bytes += grow
            return True
        self._push(data, off)
        for start in sorted(self._early):
            if start > self._fed:
                break
            piece = self._early.pop(start)
            self._early_bytes -= len(piece)
            if start + len(piece) > self._fed:
                self._push(piece, start)
        return True

    def _push(self, data: bytes, off: int) -> None:
        """Queue the part of *data* (which starts at *off* <= fed) beyond ``fed``."""
        fresh = data if off == self._fed else data[self._fed - off :]
        self._queue.append(fresh)
        self._queued += len(fresh)
        self._fed += len(fresh)

    def end(self) -> None:
        """Feed no more (what is queued may still be hashed)."""
        self._ended = True

    def drop_queue(self) -> int:
        """Drop what waits for hashing; return its size."""
        dropped = self._queued
        self._queue, self._queued = [], 0
        return dropped

    def take_batch(self) -> list[bytes]:
        """Hand the whole queue to the hashing task."""
        batch = self._queue
        self._queue, self._queued = [], 0
        return batch

    def hash_batch(self, pieces: list[bytes]) -> None:
        """Feed *pieces* to the digest (in a worker thread: hashlib releases the GIL)."""
        for piece in pieces:
            self._digest.update(piece)

    def begin_hashing(self) -> None:
        self._hashing = True
        self._idle = trio.Event()

    def end_hashing(self) -> None:
        self._hashing = False
        self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until everything queued is hashed."""
        while self._hashing:
            await self._idle.wait()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class ContentVerifier:
    """Checks the content handles read in order; owns the hash budget and the suspect set.

    Hashing tasks run in *nursery*. With *enabled* False (``--no-verify``) nothing is checked.
    """

    def __init__(self, nursery: trio.Nursery, *, enabled: bool) -> None:
        self._nursery = nursery
        self._enabled = enabled
        self._pending = 0  # bytes in checks' queues or being hashed, all handles
        self._pending_peak = 0
        self._verified = self._failures = self._hashed_bytes = 0
        # Keys of content that failed verification and has not been verified since.
        self._suspect: set[str] = set()

    def open(self, artifact: Artifact, key: str, size: int) -> ContentCheck | None:
        """Return a check of *artifact*'s content (*size* bytes, cached under *key*), or None
        when it is not verified (disabled, empty, or no sha256 given)."""
        if self._enabled and size > 0 and _SHA256_HEX.fullmatch(artifact.checksum):
            return ContentCheck(artifact, key, size)
        return None

    def trusts(self, key: str) -> bool:
        """False while the content cached under *key* is suspect: it failed verification
        and no handle has verified it since."""
        return key not in self._suspect

    async def feed(self, check: ContentCheck, off: int, data: bytes) -> bool:
        """Feed the bytes a read returned at *off* to *check* (nothing once it ended);
        return True if this read completed the content and it matched its sha256.

        Raises:
            IntegrityError: this read completes content whose sha256 does not match; the
                content is suspect from now on.
        """
        if check.ended:
            return False
        complete_before = check.complete
        queued_before = check.queued
        if not check.accept(off, data):
            self.forget(check)
            log.debug("artifact %s: read out of order, not verified", check.artifact.id)
            return False
        self._pending += check.queued - queued_before
        self._pending_peak = max(self._pending_peak, self._pending)
        completes = not complete_before and check.complete
        pressed = self._pending > HASH_BACKLOG_TOTAL
        if (
            check.queued
            and not check.hashing
            and (completes or pressed or check.queued >= HASH_BATCH)
        ):
            check.begin_hashing()
            self._nursery.start_soon(self._hash_queued, check)
        if check.queued > VERIFY_BACKLOG or (pressed and check.hashing):
            await check.wait_idle()
        if not completes:
            return False
        check.end()
        await check.wait_idle()
        actual = check.hexdigest()
        if actual == check.expected:
            self._verified += 1
            self._suspect.discard(check.key)
            return True
        self._failures += 1
        self._suspect.add(check.key)
        log.error(
            "artifact %s (%r): the content read does not match its sha256 (expected %s, got "
            "%s); the last read fails with EIO and the cached blocks were dropped",
            check.artifact.id,
            check.artifact.name,
            check.expected,
            actual,
        )
        raise IntegrityError(
            f"content of {check.artifact.name!r} does not match its checksum {check.expected}"
        )

    def forget(self, check: ContentCheck) -> None:
        """Give up *check* (read out of order, or its handle released): drop its queue."""
        if check.ended:
            return
        check.end()
        self._pending -= check.drop_queue()

    def statistics(self) -> VerifierStats:
        """Return the counters."""
        return VerifierStats(
            verified=self._verified,
            verify_failures=self._failures,
            hashed_bytes=self._hashed_bytes,
            hash_backlog_peak=self._pending_peak,
        )

    async def _hash_queued(self, check: ContentCheck) -> None:
        """Hash the check's queue in worker threads until it is empty."""
        try:
            while check.queued:
                size = check.queued
                batch = check.take_batch()
                try:
                    await trio.to_thread.run_sync(check.hash_batch, batch)
                finally:
                    self._pending -= size
                self._hashed_bytes += size
        finally:
            check.end_hashing()

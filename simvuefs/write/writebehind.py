"""Write-behind: writes to a file being written return once queued, and reach the spool disk
in the background.

FUSE writes are synchronous, so this is what lets the kernel's copy, the spool write and
the hashing overlap. Each file has its :class:`FileWrites` (its queue, its flusher's state,
its running hash); one :class:`WriteBehind` per spool runs the flushers and keeps the free
space the queues of all files may take.

Invariants:

- A file has at most one flusher task; it writes the queue in order, batch by batch, in a
  worker thread, and ends when the queue is empty or a batch fails.
- A flusher gathers a batch before it takes a non-empty queue (it ends at once on an empty
  one, as above): until BATCH bytes are queued, a task waits for the queue
  (:meth:`FileWrites.wait_written` with more than its limit unwritten), or BATCH_DELAY
  seconds have passed; so a file written in a stream costs one thread hop per BATCH
  bytes, not one per FUSE write, and no queued byte waits longer than BATCH_DELAY before
  it goes to disk unless its batch is being written.
- Each FileWrites counts the bytes of its queue and of the batch being written; waiters
  (:meth:`FileWrites.wait_written`, until that count is at most their limit) wake after
  every batch and when the flusher ends.
- While the flusher runs, only it touches the running hash: the batch being written is
  hashed in a second worker thread at the same time (``inthread.InThread``), and the flusher
  waits for both before it takes the next batch or wakes the waiters.
- Batches are written direct where they can be (``direct.py``: no page cache).
- A write is queued only when the free space measured last (minus everything queued since)
  covers its growth; otherwise the caller waits for the queue and writes it at once with a
  fresh measurement (:meth:`WriteBehind.write_now`), so a full spool still fails that write
  with ENOSPC.
- A queued write that fails on disk (the disk filled up meanwhile, an I/O error) is sticky:
  :meth:`FileWrites.raise_error` raises it for every later write, truncate and commit, and
  the rest of the queue is dropped with it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Protocol

import trio

from simvuefs.config import MIB
from simvuefs.errors import LocalError
from simvuefs.inthread import InThread
from simvuefs.write.direct import DirectWriter
from simvuefs.write.spool import Spool

log = logging.getLogger(__name__)

WRITE_BEHIND = 16 * MIB
"""Bytes of one file accepted into memory before they are on the spool disk."""
BATCH = 4 * MIB
"""Bytes a flusher gathers before it writes them (one thread hop): less than WRITE_BEHIND,
so that writers never wait for a batch that is still gathering."""
BATCH_DELAY = 0.05
"""Longest a flusher waits for a batch to gather before it writes what is queued."""

Write = tuple[int, bytes, int]
"""A queued write: offset, data, and by how many bytes it grows the file."""


class FileWrites:
    """The write-behind state of one file (module docstring): the queued writes, whether a
    flusher runs and its wake-ups, the error that stopped it, and the sha256 of the file's
    first bytes, kept while the writes are sequential."""

    def __init__(self) -> None:
        self._queue: list[Write] = []
        self._queued = 0  # bytes in _queue (not taken by the flusher yet)
        self._unwritten = 0
        self._waiters = 0  # tasks in wait_written that wait for the flusher
        self._arrived = trio.Event()  # set when a write is queued or a task starts waiting
        self._flushing = False
        self._flushed = trio.Event()  # set and replaced after each batch the flusher writes
        self._error: LocalError | None = None
        # sha256 of the first _hashed bytes; None: hash the whole file again at commit.
        self._hasher: hashlib._Hash | None = hashlib.sha256()
        self._hashed = 0

    def raise_error(self) -> None:
        """Raise the error of a queued write that could not be stored, if any."""
        if self._error is not None:
            raise self._error

    async def wait_written(self, limit: int = 0) -> None:
        """Wait until at most *limit* bytes of the queued writes are not on disk yet."""
        while self._unwritten > limit and self._flushing:
            self._waiters += 1
            self._arrived.set()  # a gathering flusher takes what is queued now
            try:
                await self._flushed.wait()
            finally:
                self._waiters -= 1

    # -- the hash --------------------------------------------------------------------------

    def truncated(self, size: int) -> None:
        """The file was cut to *size* bytes (the queue is empty): the hash may be void."""
        if size < self._hashed:
            self._hasher = None

    def rewritten(self) -> None:
        """The file was written around the queue (its content fetched into it): hash it
        again at commit."""
        self._hasher = None

    def take_hash(self) -> tuple[hashlib._Hash, int]:
        """Return a hasher and how many first bytes of the file it covers (0: a new one).

        Sealing consumes it: a later commit, after this one failed, hashes from the start.
        """
        hasher, start = self._hasher, self._hashed
        self._hasher = None
        if hasher is None:
            return hashlib.sha256(), 0
        return hasher, start

    def hash(self, batch: list[Write]) -> None:
        """Worker thread, while *batch* is written (one batch at a time): add it to the
        running hash while the writes are sequential; one out of order voids the hash."""
        hasher, self._hasher = self._hasher, None
        for offset, data, _ in batch:
            if hasher is None or offset != self._hashed:
                return
            hasher.update(data)
            self._hashed += len(data)
        self._hasher = hasher

    # -- the queue, as WriteBehind drives it -------------------------------------------------

    def enqueue(self, write: Write) -> bool:
        """Queue *write*; True when no flusher runs yet (the caller starts one)."""
        self._queue.append(write)
        self._queued += len(write[1])
        self._unwritten += len(write[1])
        self._arrived.set()
        start = not self._flushing
        self._flushing = True
        return start

    async def gathered(self) -> None:
        """Flusher: return once the queue is worth a batch (module docstring): BATCH bytes,
        a task waiting for it, an error, or BATCH_DELAY seconds from now; at once when it
        is empty (the flusher ends then, so it never outlives the fd it was given: the last
        release closes that fd once nothing is queued)."""
        with trio.move_on_after(BATCH_DELAY):
            while 0 < self._queued < BATCH and not self._waiters and self._error is None:
                self._arrived = trio.Event()
                await self._arrived.wait()

    def next_batch(self) -> list[Write]:
        """Take the whole queue for the flusher; empty when done or after an error."""
        if self._error is not None:
            return []
        batch, self._queue = self._queue, []
        self._queued = 0
        return batch

    def fail(self, error: LocalError) -> list[Write]:
        """Make *error* sticky and drop the rest of the queue; return the writes dropped."""
        self._error = error
        dropped, self._queue = self._queue, []
        self._queued = 0
        return dropped

    def written(self, batch: list[Write]) -> None:
        """The writes of *batch* are on disk (or dropped): wake the waiters."""
        self._unwritten -= sum(len(data) for _, data, _ in batch)
        self._wake_waiters()

    def flusher_ended(self) -> None:
        """The flusher returned: the next queued write starts another one."""
        self._flushing = False
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Wake the tasks in wait_written; they look again."""
        self._flushed.set()
        self._flushed = trio.Event()


class WrittenFile(Protocol):
    """What write-behind needs of a file (a StagedFile): its writes and where to log it."""

    @property
    def name(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def writes(self) -> FileWrites: ...


class WriteBehind:
    """The flushers of the files of one spool and the free space their queues may take.

    Flushers run in *nursery*. ``_room`` is the free space measured last minus what was
    queued since; ``_queued_growth`` is how much the queued writes of all files grow them.
    """

    def __init__(self, spool: Spool, nursery: trio.Nursery) -> None:
        self._spool = spool
        self.writer = DirectWriter(spool)
        self._nursery = nursery
        self._room = 0  # bytes that can be queued before the free space is measured again
        self._queued_growth = 0

    def queue(self, f: WrittenFile, fd: int, offset: int, data: bytes, grow: int) -> bool:
        """Queue a write of *data* at *offset* of *f* (through *fd*) if the free space is
        known to cover its growth *grow*; False if not (then use write_now)."""
        if grow > self._room:
            return False
        self._room -= grow
        self._queued_growth += grow
        if f.writes.enqueue((offset, data, grow)):
            self._nursery.start_soon(self._flush, f, fd)
        return True

    async def write_now(self, f: WrittenFile, fd: int, offset: int, data: bytes, grow: int) -> None:
        """Write *data* at *offset* through *fd* now, measuring the free space (the queue of
        *f* must be empty). Raises LocalError: ENOSPC when the spool is full; EIO."""
        room = await self._store(f.writes, fd, [(offset, data, grow)])
        self._room = room - self._queued_growth

    async def _flush(self, f: WrittenFile, fd: int) -> None:
        """The flusher of *f*: write its queue through *fd* until empty or a batch fails.

        *fd* stays open meanwhile: the last release waits for the queue first.
        """
        writes = f.writes
        try:
            while True:
                with trio.CancelScope(shield=True):  # bounded by BATCH_DELAY; keeps the queue
                    await writes.gathered()
                batch = writes.next_batch()
                if not batch:
                    break
                room: int | None = None
                try:
                    with trio.CancelScope(shield=True):  # the queue is all the data there is
                        room = await self._store(writes, fd, batch)
                except LocalError as exc:
                    log.warning("cannot store writes to %s of run %s: %s", f.name, f.run_id, exc)
                    batch += writes.fail(exc)
                finally:
                    self._queued_growth -= sum(grow for _, _, grow in batch)
                    writes.written(batch)
                if room is not None:
                    self._room = room - self._queued_growth
        finally:
            writes.flusher_ended()

    async def _store(self, writes: FileWrites, fd: int, batch: list[Write]) -> int:
        """Write *batch* through *fd* in a worker thread while another hashes it; return
        once both are done, with the room left (``_write``). Raises what the write raised."""
        hashing = InThread(functools.partial(writes.hash, batch))
        try:
            return await trio.to_thread.run_sync(self._write, fd, batch)
        finally:
            with trio.CancelScope(shield=True):  # the running hash is the thread's until then
                await hashing.result()

    def _write(self, fd: int, batch: list[Write]) -> int:
        """Worker thread: check the free space for the batch's growth, write it (direct:
        ``direct.py``), start the writeback of what went through the page cache; return the
        room left (``Spool.check_free``)."""
        room = self._spool.check_free(sum(grow for _, _, grow in batch))
        self.writer.write(fd, batch)
        start = min(offset for offset, _, _ in batch)
        self._spool.start_writeback(fd, start, max(o + len(d) for o, d, _ in batch) - start)
        return room

"""CellCache: the content cache of one process (planning, claims, stores, eviction).

What :class:`CellCache` does for the two ways of reading (``source.CachingSource``:
bounded ranges; ``stream.CachedBody``: open-ended streams):

Planning
    :meth:`CellCache.plan` says, for a position of a content, which bytes a part on disk
    holds (read in a worker thread, its CRC checked once per part file and process:
    :class:`ChecksumMemo`), or which bytes another stream of this process has received
    (:class:`Filling`), or where the gap before the next part ends (:class:`Gap`).

Fetching once per cluster
    Before fetching a 4 MiB cell (``store.CELL``), a process claims it (a file created
    with ``O_EXCL``, its mtime renewed as bytes arrive: :meth:`CellCache.renew`) and
    releases the claim once the cell's part is stored. A stream that finds a cell claimed
    by another process waits (:meth:`CellCache.acquire`, polling every
    :data:`CLAIM_POLL` s) until the claim goes, then reads the cell from disk; it does not
    wait for a holder that shows no progress for :data:`HOLDER_STALL` s, nor longer than
    :data:`CLAIM_WAIT` s. Bounded reads wait too, though the reader they serve may
    be what another process's stream waits for: they wait only while the holder makes
    progress, so such a cycle costs at most :data:`HOLDER_STALL` s. Within one process
    claims are shared, and a stream or a bounded read follows another stream's cell
    (:class:`Filling`) for as long as it makes progress (:data:`FOLLOW_PATIENCE`).

Storing
    Fetched bytes are stored in the background (:meth:`CellCache.keep`, at most
    :data:`WRITERS` threads) as parts cut at cell boundaries. A fetch is admitted first
    (:meth:`CellCache.room`): it waits (at most :data:`STORE_WAIT` s) while more than
    :data:`STORE_BACKLOG` bytes wait to be written. What an admitted fetch brings is always
    stored, so a cold read runs at the store's pace when the store is the slower and
    leaves no holes; the backlog is then bounded by :data:`STORE_BACKLOG` plus what the
    admitted fetches have in flight (the read-ahead's window, ``--read-ahead-total``, and
    the bounded reads the kernel sends at once). Only a fetch that waited
    :data:`STORE_WAIT` in vain (a cache disk that hangs) is stored only if there is room
    when it arrives.

Sealing
    Which parts hold bytes a reader verified against the content's SHA-256 is recorded
    (``seals.SealBook``); once they tile the content they are written down as its seal
    (``store.Seal``), and reads of a sealed content take only the parts it names
    (:meth:`CellCache.open_sealed`, ``sealed.SealedRead``).

Degrading and bounded
    A read-only cache is read and never written; a write that fails (disk full, quota)
    stops storing for :data:`STORE_PAUSE` seconds; each case logs one warning per process.
    After every ``size / 8`` bytes stored (and at unmount) the process evicts in a worker
    thread (``usage.evict``) down to the cache size.

All file I/O runs in worker threads; the state here is touched only in the trio thread.
"""

from __future__ import annotations

import bisect
import errno
import logging
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from simvuefs.diskcache.sealed import SealedRead
from simvuefs.diskcache.seals import SealBook
from simvuefs.diskcache.store import CELL, ContentStore, DamagedPart, Part, Piece, Seal, cells
from simvuefs.diskcache.usage import evict
from simvuefs.errors import IntegrityError

if TYPE_CHECKING:
    from simvuefs.backends.protocol import RangeSource
    from simvuefs.models import Artifact

log = logging.getLogger(__name__)

CLAIM_POLL = 0.02
"""Seconds between two looks at another process's claim."""
CLAIM_WAIT = 5.0
"""Longest wait for another process's claim before fetching anyway."""
HOLDER_STALL = 0.5
"""A claim whose holder shows no progress for this long is not waited for (its stream
may wait for the reader that waits here: a cycle between processes)."""
RENEW_INTERVAL = 0.1
"""Seconds between two renewals of a claim by a stream receiving its cell."""
FOLLOW_PATIENCE = 1.0
"""Longest a stream waits for new bytes of another stream of this process that fills the
same cell before fetching them itself (the other may belong to a reader that paused)."""
STORE_PAUSE = 30.0
"""Seconds without storing after a failed write (disk full, quota)."""
STORE_BACKLOG = 128 * 1024 * 1024
"""Bytes fetched and waiting to be written above which a fetch waits to be admitted
(:meth:`room`). The parts of the read-ahead's window (96 MiB by default, config.py) are
all in flight at once and arrive together: they were admitted, so they are stored even
if they take the backlog over this mark (before, they were dropped there, and a cold read
on a slow CPU left cells unstored: no seal, the read after a remount fetched them)."""
STORE_WAIT = 2.0
"""Longest a fetch waits to be admitted; then it goes on unadmitted, and what it fetches is
stored only if the backlog has room when it arrives (a cache disk that hangs slows reads
down, never stops them, and the backlog stays bounded)."""
WRITERS = 2
"""Worker threads writing parts at once (more only add contention for the GIL)."""
SHUTDOWN_WAIT = 10.0
"""At unmount, how long stores and copies still running may take before they are dropped."""
USE_RECORD_INTERVAL = 30.0
"""Seconds between two use records of one entry by one process."""
INDEX_ENTRIES = 256
"""Entries whose part lists are kept in memory."""
MEMO_PARTS = 4096
"""Part files remembered as checked."""
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass
class CacheStats:
    """Counters of one process's use of the cache (``simvuefs cache``, ``status``)."""

    hit_bytes: int = 0
    hit_reads: int = 0
    miss_bytes: int = 0
    miss_reads: int = 0
    uncached_bytes: int = 0
    stored_bytes: int = 0
    store_skipped_bytes: int = 0
    store_failures: int = 0
    damaged_parts: int = 0
    dropped_parts: int = 0
    seals_written: int = 0
    sealed_reads: int = 0
    claim_waits: int = 0
    shared_bytes: int = 0
    stream_miss_bytes: int = 0
    evicted_entries: int = 0
    evicted_bytes: int = 0


class ChecksumMemo:
    """Part files this process has checked: ``(sha, name) -> (inode, size, mtime_ns)``."""

    def __init__(self) -> None:
        self._checked: OrderedDict[tuple[str, str], tuple[int, int, int]] = OrderedDict()

    def trusts(self, key: tuple[str, str], identity: tuple[int, int, int] | None) -> bool:
        return identity is not None and self._checked.get(key) == identity

    def remember(self, key: tuple[str, str], identity: tuple[int, int, int] | None) -> None:
        if identity is None:
            return
        self._checked[key] = identity
        self._checked.move_to_end(key)
        while len(self._checked) > MEMO_PARTS:
            self._checked.popitem(last=False)


@dataclass
class Gap:
    """Bytes ``[start, stop)`` (stop None: to the end) no part on disk holds."""

    start: int
    stop: int | None


class Filling:
    """Bytes of one cell that one stream of this process is receiving, from *start* on:
    other streams of this process read them here instead of fetching them again. Kept
    until they are stored (or dropped), so a follower never finds them in neither place."""

    def __init__(self, start: int, stop: int | None) -> None:
        self.start = start
        self.stop = stop  # where its stream's request ends (None: open-ended)
        self.received = 0
        self.over = False
        self._chunks: list[Piece] = []
        self._offsets: list[int] = []  # of each chunk, from *start*
        self._changed = trio.Event()

    def reaches(self, position: int) -> bool:
        """True if its stream goes on and will receive the byte at *position*."""
        return (
            not self.over and self.start <= position and (self.stop is None or position < self.stop)
        )

    def add(self, chunk: Piece) -> None:
        self._offsets.append(self.received)
        self._chunks.append(chunk)
        self.received += len(chunk)
        self._changed.set()
        self._changed = trio.Event()

    def finish(self) -> None:
        """No more bytes will come (the cell is complete, or its stream stopped)."""
        self.over = True
        self._changed.set()

    def take(self, position: int, max_bytes: int) -> bytes:
        """Up to *max_bytes* received bytes from *position*, from one chunk (``b""``:
        none yet)."""
        offset = position - self.start
        if offset >= self.received or max_bytes <= 0:
            return b""
        index = bisect.bisect_right(self._offsets, offset) - 1
        chunk, inside = self._chunks[index], offset - self._offsets[index]
        if inside == 0 and len(chunk) <= max_bytes and isinstance(chunk, bytes):
            return chunk
        return bytes(chunk[inside : inside + max_bytes])  # (a view of a reader's block: copied)

    async def wait(self, patience: float) -> bool:
        """Wait for more bytes or the end; False if nothing happened for *patience* s."""
        with trio.move_on_after(patience):
            await self._changed.wait()
            return True
        return False


class CellCache:
    """The content cache at *store* as one process uses it (module docstring); *inner* is
    where missing bytes come from."""

    def __init__(
        self,
        inner: RangeSource,
        store: ContentStore,
        size: int,
        nursery: trio.Nursery,
        *,
        writable: bool,
    ) -> None:
        self.inner = inner
        self.store = store
        self.size = size
        self.stats = CacheStats()
        self._nursery = nursery
        self._writable = writable
        self._paused_until = 0.0
        self._index: OrderedDict[str, list[Part]] = OrderedDict()
        self._seals: OrderedDict[str, Seal | None] = OrderedDict()  # as last seen on disk
        self.seals = SealBook()
        self._memo = ChecksumMemo()
        self._held: dict[tuple[str, int], int] = {}
        self._claim_files: set[tuple[str, int]] = set()
        self._renewed: dict[tuple[str, int], float] = {}
        self._used: dict[str, float] = {}
        self._backlog = 0
        self._since_eviction = 0
        self._evicting = False
        self._warned: set[str] = set()
        self._busy = 0
        self._idle = trio.Event()
        self._fillings: dict[tuple[str, int], Filling] = {}
        self._writer = trio.CapacityLimiter(WRITERS)
        self._drained = trio.Event()  # set when the store backlog shrinks

    def spawn(self, work: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run *work* in the background, counted until it ends (:meth:`settled`)."""

        async def counted() -> None:
            try:
                await work(*args)
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

        if self._busy == 0:
            self._idle = trio.Event()
        self._busy += 1
        self._nursery.start_soon(counted)

    async def settled(self) -> None:
        """Wait until no store, copy or eviction runs."""
        if self._busy:
            await self._idle.wait()

    # -- planning: disk or network -----------------------------------------------------------

    async def plan(self, sha: str, position: int, end: int | None) -> list[bytes] | Gap:
        """The bytes from *position* (up to *end*) that one part on disk holds, in pieces,
        or those another stream of this process has received, or the gap before the next
        part. Damaged or vanished parts are forgotten and looked up again."""
        for _ in range(3):
            known = self._index.get(sha)
            part = None if known is None else covering(known, position)
            if part is None:
                parts = await self.rescan(sha)
                part = covering(parts, position)
            if part is None:
                received = self._received(sha, position, end)
                if received:
                    return [received]
                return Gap(position, next_start(parts, position, end))
            stop = part.stop if end is None else min(part.stop, end)
            pieces = await self._read_part(sha, part, position, stop)
            if pieces is not None:
                self.stats.hit_bytes += stop - position
                self.stats.hit_reads += 1
                self._note_use(sha)
                self.seals.served(sha, part)
                return pieces
            self._index.pop(sha, None)
        return Gap(position, end)

    async def _read_part(self, sha: str, part: Part, start: int, stop: int) -> list[bytes] | None:
        key = (sha, part.name)

        def read() -> tuple[list[bytes] | None, tuple[int, int, int] | None]:
            identity = self.store.identity(sha, part)
            trusted = self._memo.trusts(key, identity)
            return self.store.read(sha, part, start, stop, trusted=trusted), identity

        try:
            data, identity = await trio.to_thread.run_sync(read)
        except DamagedPart as exc:
            self.stats.damaged_parts += 1
            log.warning("%s: fetching it again", exc)
            return None
        except OSError as exc:
            self._warn("read", f"cannot read the content cache {self.store.root}: {exc}")
            return None
        if data is not None:
            self._memo.remember(key, identity)
        return data

    async def rescan(self, sha: str) -> list[Part]:
        seal = None
        try:
            parts, seal = await trio.to_thread.run_sync(self.store.scan, sha)
        except OSError as exc:
            self._warn("read", f"cannot read the content cache {self.store.root}: {exc}")
            parts = []
        self._remember(sha, parts)
        self._seals[sha] = seal
        self._seals.move_to_end(sha)
        while len(self._seals) > INDEX_ENTRIES:
            self._seals.popitem(last=False)
        return parts

    def _remember(self, sha: str, parts: list[Part]) -> None:
        self._index[sha] = parts
        self._index.move_to_end(sha)
        while len(self._index) > INDEX_ENTRIES:
            self._index.popitem(last=False)

    async def forget(self, artifact: Artifact) -> None:
        """Delete the parts of *artifact*'s content: what a reader read of it failed the
        whole-content SHA-256 (a part with a valid CRC holding bytes the server sent wrong),
        so the next read fetches it afresh instead of failing the same way."""
        sha = artifact.checksum
        if not sha:
            return
        self.seals.taint(sha)
        self._seals.pop(sha, None)
        with trio.move_on_after(SHUTDOWN_WAIT):
            await self.settled()  # parts of the wrong bytes may still be being stored
        try:
            dropped = await trio.to_thread.run_sync(self.store.drop, sha)
        except OSError as exc:
            self._warn("forget", f"cannot drop parts of the content cache {self.store.root}: {exc}")
            return
        self._index.pop(sha, None)
        self.stats.dropped_parts += dropped
        log.info("content %s failed verification: its %d cached parts dropped", sha, dropped)

    # -- claims -------------------------------------------------------------------------------

    async def acquire(
        self, sha: str, start: int, stop: int, patience: float
    ) -> tuple[int, list[int]]:
        """Claim the cells of ``[start, stop)`` from the first on; return how far the claimed
        run reaches and the cells claimed. Waits up to *patience* seconds while another
        process holds the first cell's claim (then the range is fetched unclaimed)."""
        claimed: list[int] = []
        if not self.storing():
            return stop, claimed
        deadline = trio.current_time() + patience
        cell = start // CELL
        mark, moved = None, trio.current_time()
        while not await self.claim(sha, cell):
            now = trio.current_time()
            if now >= deadline or now - moved >= HOLDER_STALL:
                return stop, claimed  # fetch anyway: the claimer stalled, died or is slow
            self.stats.claim_waits += 1
            await trio.sleep(CLAIM_POLL)
            seen = await trio.to_thread.run_sync(self.store.claim_mark, sha, cell)
            if seen != mark:
                mark, moved = seen, trio.current_time()
            if seen is None:
                parts = await self.rescan(sha)
                if covering(parts, start) is not None:
                    return start, claimed  # the caller plans again and reads it from disk
        claimed.append(cell)
        for cell in range(start // CELL + 1, (stop - 1) // CELL + 1):
            if not await self.claim(sha, cell):
                return cell * CELL, claimed
            claimed.append(cell)
        return stop, claimed

    async def claim(self, sha: str, cell: int) -> bool:
        key = (sha, cell)
        if key in self._held:
            self._held[key] += 1
            return True
        try:
            won = await trio.to_thread.run_sync(self.store.claim, sha, cell)
        except OSError as exc:
            self._write_failed(exc)
            return True  # no claims without a writable cache: fetch
        if won:
            self._hold_new_claim(key)
        return won

    def _hold_new_claim(self, key: tuple[str, int]) -> None:
        """This process just created the claim file of *key* and is its one holder."""
        self._held[key] = 1
        self._claim_files.add(key)
        self._renewed[key] = trio.current_time()  # created just now: as good as renewed

    def renew(self, sha: str, cell: int) -> None:
        """Renew this process's claim on *cell* (at most every :data:`RENEW_INTERVAL` s)."""
        now = trio.current_time()
        key = (sha, cell)
        if key in self._claim_files and now - self._renewed.get(key, 0.0) >= RENEW_INTERVAL:
            self._renewed[key] = now
            self.spawn(self._renew, sha, cell)

    async def _renew(self, sha: str, cell: int) -> None:
        try:
            await trio.to_thread.run_sync(self.store.renew, sha, cell)
        except OSError as exc:
            log.debug("cannot renew a claim: %s", exc)

    def release(self, sha: str, claimed: list[int], removed: frozenset[int] = frozenset()) -> None:
        """Release this holder's claims on *claimed*; the files of cells in *removed* are
        already gone (:meth:`_store` removed them in its thread, one hop fewer per cell)."""
        for cell in claimed:
            key = (sha, cell)
            count = self._held.get(key, 0) - 1
            if cell in removed:  # (a holder that came meanwhile has lost its file: at
                self._claim_files.discard(key)  # worst, another process fetches it too)
                self._renewed.pop(key, None)
            if count > 0:
                self._held[key] = count
                continue
            self._held.pop(key, None)
            if cell not in removed:
                self._nursery.start_soon(self._unlink_claim, sha, cell)

    def _last_holds(self, sha: str, claimed: list[int]) -> frozenset[int]:
        """The cells of *claimed* whose claim files go once this holder releases them."""
        return frozenset(
            cell
            for cell in claimed
            if self._held.get((sha, cell)) == 1 and (sha, cell) in self._claim_files
        )

    async def _unlink_claim(self, sha: str, cell: int) -> None:
        key = (sha, cell)
        if key in self._held or key not in self._claim_files:
            return  # claimed again meanwhile, or never a file
        try:
            await trio.to_thread.run_sync(self.store.release, sha, cell)
        except OSError as exc:
            log.debug("cannot remove a claim: %s", exc)
        if key not in self._held:
            self._claim_files.discard(key)
            self._renewed.pop(key, None)

    def release_all(self) -> None:
        """Remove the claim files this process still has (at shutdown; does file I/O)."""
        for sha, cell in self._claim_files:
            try:
                self.store.release(sha, cell)
            except OSError as exc:
                log.debug("cannot remove a claim: %s", exc)
        self._claim_files.clear()

    # -- storing ------------------------------------------------------------------------------

    def storing(self) -> bool:
        return self._writable and trio.current_time() >= self._paused_until

    def _received(self, sha: str, position: int, end: int | None) -> bytes:
        """Bytes from *position* (up to *end* and the cell's end) that a stream of this
        process has received already; never waits for more."""
        filling = self.filling(sha, position)
        if filling is None:
            return b""
        limit = (position // CELL + 1) * CELL - position
        data = filling.take(position, limit if end is None else min(limit, end - position))
        self.stats.shared_bytes += len(data)
        return data

    def filling(self, sha: str, position: int) -> Filling | None:
        """The cell of *position* as another stream of this process receives it, if that
        stream started at or before *position* and has, or will have, the byte there."""
        filling = self._fillings.get((sha, position // CELL))
        if filling is None or not filling.start <= position <= filling.start + filling.received:
            return None
        if filling.over and position == filling.start + filling.received:
            return None  # it stopped short of *position*: nothing more will come
        return filling

    def upcoming(self, sha: str, position: int) -> Filling | None:
        """The cell of *position* as a stream of this process receives it, if that stream
        started at or before *position* and goes on (it may not have got there yet)."""
        filling = self._fillings.get((sha, position // CELL))
        return filling if filling is not None and filling.reaches(position) else None

    def start_filling(self, sha: str, position: int, stop: int | None) -> Filling | None:
        """Announce that a stream receives the cell of *position* from there, its request
        ending at *stop* (None: another stream does already)."""
        key = (sha, position // CELL)
        if key in self._fillings:
            return None
        filling = self._fillings[key] = Filling(position, stop)
        return filling

    def _end_filling(self, sha: str, filling: Filling | None) -> None:
        if filling is None:
            return
        filling.finish()
        key = (sha, filling.start // CELL)
        if self._fillings.get(key) is filling:
            del self._fillings[key]

    def keep(
        self,
        sha: str,
        start: int,
        pieces: list[Piece],
        claimed: list[int],
        filling: Filling | None = None,
        *,
        admitted: bool,
    ) -> None:
        """Store *pieces* (the bytes from *start*) in the background, then release
        *claimed* and end *filling*. Pieces of an *admitted* fetch (:meth:`room`) are
        stored whatever the backlog; others only if it has room for them."""
        if filling is not None:
            filling.finish()
        size = sum(len(piece) for piece in pieces)
        crowded = not admitted and self._backlog + size > STORE_BACKLOG
        if not size or not self.storing() or crowded:
            self.stats.store_skipped_bytes += size
            if size:
                self.seals.not_stored(sha, size)
            self.release(sha, claimed)
            self._end_filling(sha, filling)
            return
        self._backlog += size
        self.spawn(self._store, sha, start, pieces, size, claimed, filling)

    async def _store(
        self,
        sha: str,
        start: int,
        pieces: list[Piece],
        size: int,
        claimed: list[int],
        filling: Filling | None,
    ) -> None:
        ending = self._last_holds(sha, claimed)
        removed: frozenset[int] = frozenset()

        def write() -> list[Part]:
            if len(pieces) > 1:  # a stream's pieces of one cell
                parts = [self.store.store(sha, start, pieces)]
            else:
                parts = [self.store.store(sha, at, [p]) for at, p in cells(start, pieces[0])]
            for cell in ending:  # after the parts: a waiter then finds them on disk
                try:
                    self.store.release(sha, cell)
                except OSError as exc:
                    log.debug("cannot remove a claim: %s", exc)
            return parts

        try:
            parts = await trio.to_thread.run_sync(write, limiter=self._writer)
        except OSError as exc:
            self._write_failed(exc)
            self.stats.store_failures += 1
            self.seals.not_stored(sha, size)
        else:
            removed = ending
            self.seals.stored(sha, size, parts)
            self.stats.stored_bytes += size
            known = self._index.get(sha)
            if known is not None:
                for part in parts:
                    bisect.insort(known, part, key=lambda p: p.start)
            self._since_eviction += size
            self._note_use(sha)
            self._maybe_evict()
        finally:
            self._backlog -= size
            self._drained.set()
            self._drained = trio.Event()
            self.release(sha, claimed, removed)
            self._end_filling(sha, filling)
            self._seal_if_ready(sha)

    async def room(self) -> bool:
        """Admit a fetch: wait until the store backlog is under :data:`STORE_BACKLOG` (at
        most :data:`STORE_WAIT` s), so that a cold read runs at the cache disk's speed if
        that is the slower, rather than leaving holes in the cache. True if admitted
        (what it fetches is then stored: :meth:`keep`); False after waiting in vain."""
        if self._backlog < STORE_BACKLOG or not self.storing():
            return True
        with trio.move_on_after(STORE_WAIT):
            while self._backlog >= STORE_BACKLOG:
                await self._drained.wait()
            return True
        return False

    async def enter(self, sha: str, position: int) -> bool:
        """A stream reaches a new cell at *position*: True if it may fetch it (claimed
        now, or already claimed in this process, or claims are off); False if a part on
        disk covers *position* or another process claimed the cell. One worker-thread call."""
        cell = position // CELL
        key = (sha, cell)
        if not self.storing():
            return True
        if key in self._held:
            self._held[key] += 1
            return True
        try:
            parts, won = await trio.to_thread.run_sync(self.store.enter, sha, cell, position)
        except OSError as exc:
            self._write_failed(exc)
            return True
        self._remember(sha, parts)
        if won:
            self._hold_new_claim(key)
        return won

    def _write_failed(self, exc: OSError) -> None:
        if exc.errno in _UNWRITABLE:
            self._writable = False
            self._warn(
                "write",
                f"content cache {self.store.root} is not writable ({exc}): "
                "reading from the server without storing",
            )
            return
        self._paused_until = trio.current_time() + STORE_PAUSE
        self._warn(
            "full",
            f"cannot write to the content cache {self.store.root} ({exc}): "
            "reading from the server, storing again later",
        )
        self._since_eviction = self.size  # make room at the next store

    def adopt(self, sha: str, path: Path, size: int) -> None:
        """Copy the file at *path* (content *sha*, *size* bytes, already hashed by its
        writer) into the cache in the background; a file bigger than the cache is not."""
        if sha and self.storing() and 0 < size <= self.size:
            self.spawn(self._adopt, sha, path, size)

    async def _adopt(self, sha: str, path: Path, size: int) -> None:
        try:
            stored = await trio.to_thread.run_sync(self.store.adopt, sha, path)
        except FileNotFoundError:
            return  # renamed or dropped meanwhile
        except OSError as exc:
            self._write_failed(exc)
            return
        self._index.pop(sha, None)
        self.stats.stored_bytes += stored
        self._since_eviction += stored
        self._maybe_evict()

    # -- seals ----------------------------------------------------------------------------------

    def verified(self, artifact: Artifact, size: int) -> None:
        """A reader checked *artifact*'s content (*size* bytes) against its SHA-256: seal
        it once the parts holding what the reader got are stored (``seals`` module)."""
        if artifact.checksum:
            self.seals.verified(artifact.checksum, size)
            self._seal_if_ready(artifact.checksum)

    def _seal_if_ready(self, sha: str) -> None:
        seal = self.seals.ready(sha)
        if seal is not None and self.storing():
            self.spawn(self._write_seal, sha, seal)

    async def _write_seal(self, sha: str, seal: Seal) -> None:
        try:
            await trio.to_thread.run_sync(self.store.seal, sha, seal)
        except OSError as exc:
            log.debug("cannot write a seal: %s", exc)
            return
        self.stats.seals_written += 1
        if sha in self._seals:
            self._seals[sha] = seal

    async def open_sealed(self, artifact: Artifact, size: int) -> SealedRead | None:
        """Reads of *artifact* (*size* bytes) from the parts its seal names, if it has one
        (then the reader need not check the SHA-256: ``sealed`` module)."""
        sha = artifact.checksum
        if not sha or size <= 0:
            return None
        if sha not in self._seals:
            await self.rescan(sha)
        seal = self._seals.get(sha)
        if seal is None or seal.size != size:
            return None
        self.stats.sealed_reads += 1
        return SealedRead(self, artifact, seal)

    async def read_sealed(self, artifact: Artifact, part: Part) -> list[bytes]:
        """The bytes of *part*, which the seal of *artifact*'s content names: from disk
        (its CRC checked once per file and process), else fetched and checked against the
        CRC in its name, then stored again.

        Raises:
            IntegrityError: storage sent bytes other than the sealed ones.
            SimvueError: the fetch failed.
        """
        sha = artifact.checksum
        length = part.stop - part.start
        pieces = await self._read_part(sha, part, part.start, part.stop)
        if pieces is not None:
            self.stats.hit_bytes += length
            self.stats.hit_reads += 1
            self._note_use(sha)
            return pieces
        admitted = await self.room()
        data = await self.inner.read_range(artifact, part.start, length)
        self.count_miss(sha, data)
        if len(data) != length or not await trio.to_thread.run_sync(_has_crc, data, part.crc):
            self.seals.not_stored(sha, len(data))
            raise IntegrityError(
                f"storage sent bytes {part.start}-{part.stop} of {artifact.name!r} that do not "
                f"match the checked copy of its content {sha}"
            )
        self.keep(sha, part.start, [data], [], admitted=admitted)
        return [data]

    # -- use records and eviction ---------------------------------------------------------------

    def _note_use(self, sha: str) -> None:
        now = trio.current_time()
        if (
            not self._writable
            or now < self._used.get(sha, -USE_RECORD_INTERVAL) + USE_RECORD_INTERVAL
        ):
            return
        self._used[sha] = now
        if len(self._used) > INDEX_ENTRIES:
            self._used.clear()
        self._nursery.start_soon(self._touch, sha)

    async def _touch(self, sha: str) -> None:
        try:
            await trio.to_thread.run_sync(self.store.touch, sha)
        except OSError as exc:
            log.debug("cannot record the use of a cache entry: %s", exc)

    def _maybe_evict(self) -> None:
        if self._evicting or self._since_eviction < self.size // 8:
            return
        self._evicting = True
        self._since_eviction = 0
        self._nursery.start_soon(self._evict)

    async def final_eviction(self) -> None:
        """Evict once more if anything was stored since the last eviction (at unmount, so
        that the cache is within its size once the mount is gone)."""
        if self._since_eviction and not self._evicting:
            self._evicting = True
            await self._evict()

    async def _evict(self) -> None:
        try:
            entries, freed = await trio.to_thread.run_sync(evict, self.store.root, self.size)
        except OSError as exc:
            log.debug("eviction failed: %s", exc)
        else:
            self.stats.evicted_entries += entries
            self.stats.evicted_bytes += freed
            if entries:
                self._index.clear()
        finally:
            self._evicting = False

    # -- counters and warnings --------------------------------------------------------------

    def count_miss(self, sha: str, data: Piece) -> None:
        """*data* of content *sha* was fetched and is handed out (then stored, or not)."""
        self.stats.miss_bytes += len(data)
        self.stats.miss_reads += 1
        self.seals.fetched(sha, len(data))

    def counters(self) -> dict[str, int | str]:
        """This process's counters and the cache directory, for the mount's stats file."""
        return {"dir": str(self.store.root), "size_limit": self.size, **asdict(self.stats)}

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("%s", message)


def _has_crc(data: bytes, crc: int) -> bool:
    return zlib.crc32(data) == crc


def covering(parts: list[Part], position: int) -> Part | None:
    """The part holding *position* that reaches furthest, if any."""
    best = None
    index = bisect.bisect_right(parts, position, key=lambda p: p.start)
    for part in parts[:index]:
        if part.start <= position < part.stop and (best is None or part.stop > best.stop):
            best = part
    return best


def next_start(parts: list[Part], position: int, end: int | None) -> int | None:
    """Where the next part after *position* starts (capped at *end*)."""
    index = bisect.bisect_right(parts, position, key=lambda p: p.start)
    following = parts[index].start if index < len(parts) else None
    if following is None:
        return end
    return following if end is None else min(following, end)

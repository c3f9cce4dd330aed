"""The content cache directory: its layout and every operation on it (synchronous, for threads).

Layout (``DIR`` is ``--cache-dir``)::

    DIR/CACHEDIR.TAG                  marks the directory as a cache (backup tools skip it)
    DIR/v1/<sha[:2]>/<sha>/           one entry per content, named by its SHA-256
        <start>-<length>-<crc>        a part: bytes [start, start+length) of the content;
                                      <crc> is the CRC-32 (8 hex digits) of those bytes,
                                      computed when they were fetched
        .tmp-<host>-<pid>-<random>    a part being written (never read)
        claim-<cell>                  a fetch of cell <cell> in progress somewhere (O_EXCL)
        used                          the use record: its mtime is the entry's last use
        sealed                        the seal: parts that tile the content and together
                                      matched its SHA-256 (``seals`` module)

Invariants:

- A part never spans two cells of :data:`CELL` bytes (what is fetched is cut at cell
  boundaries), so a read checks at most one cell's bytes per part. Parts may overlap; any
  part covering an offset has the same bytes there (content never changes).
- A part appears complete or not at all: written under a temporary name, then renamed.
  Its name carries its own CRC, so a torn write (a crash of the machine before the page
  cache reached the disk) or bit rot is found by the first read, which deletes the part.
- Nothing relies on ``flock`` or ``atime``: claims are files created with ``O_EXCL``
  (atomic on local file systems and NFSv3+) whose holder renews their mtime as bytes
  arrive (waiters compare mtimes with each other, never with their own clock, except for
  :data:`CLAIM_STALE`); a claim older than :data:`CLAIM_STALE` seconds
  (or one made on this machine by a process that no longer runs: ``kill -9``) is a
  leftover of a process that died and is taken over; last use is the mtime of
  ``used``, set by the cache itself.
- Entries may be deleted at any time (eviction, ``simvuefs cache clean``): an open part
  stays readable, a part gone between listing and opening is a miss, and a rename into a
  deleted entry is retried once in a new directory.
- A seal names parts (by name, hence by CRC) whose concatenation a reader of this cache
  checked against the SHA-256; it is written like a part (temporary name, rename), carries a
  CRC of its own, and goes with the parts when the content fails verification (:meth:`drop`).
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import socket
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simvuefs.config import MIB

Piece = bytes | memoryview
"""Bytes of a part, as received (parts are written from several pieces without joining)."""
CELL = 4 * MIB
"""The grid parts are cut on; also the unit of claims (one fetch of a cell at a time)."""
READ_PIECE = MIB
"""Parts are read in pieces of this size."""
WRITE_SPAN = 256 * 1024
"""Bytes written by one system call at most (a received chunk, up to 4 MiB, is written in
slices). Linux 6.x (ext4 and others with large folios) sizes the page-cache folios of a
buffered write by the write's length, and on a virtual machine that hands free memory
back to its host (virtio-balloon free page reporting, in blocks of 2 MiB) large folios
take memory the host backs anew on first touch: writes of 2-4 MiB (of 1 MiB at times) cost
1.5-5.4 CPU-s/GiB of system time on the benchmark VM, writes of 64-256 KiB 0.3-0.55
(docs/performance.md, "session 8"). Elsewhere the cost is four system calls per MiB."""
CLAIM_STALE = 30.0
"""Seconds after which a claim is a dead process's leftover (a cell takes far less)."""
TEMP_STALE = 3600.0
"""Seconds after which a temporary file is a dead process's leftover (cleaned up)."""
LAYOUT = "v1"
USE_RECORD = "used"
SEAL = "sealed"
SEAL_HEADER = b"simvuefs seal 1"
CLAIM_PREFIX = "claim-"
TEMP_PREFIX = ".tmp-"
CACHEDIR_TAG = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file marks simvuefs's content cache (https://bford.info/cachedir/).\n"
)


@dataclass(frozen=True)
class Part:
    """A part file of an entry: bytes ``[start, stop)`` whose CRC-32 is *crc*."""

    start: int
    stop: int
    crc: int
    name: str

    @classmethod
    def parse(cls, name: str) -> Part | None:
        """The part a file name describes, None for other files."""
        fields = name.split("-")
        if len(fields) != 3 or not all(field.isalnum() for field in fields):
            return None
        try:
            start, length, crc = int(fields[0]), int(fields[1]), int(fields[2], 16)
        except ValueError:
            return None
        if length <= 0 or len(fields[2]) != 8:
            return None
        return cls(start, start + length, crc, name)

    @staticmethod
    def name_of(start: int, pieces: Sequence[Piece]) -> str:
        """The file name of a part holding the concatenation of *pieces* at *start*."""
        crc = length = 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
            length += len(piece)
        return f"{start}-{length}-{crc:08x}"


@dataclass(frozen=True)
class Seal:
    """Parts that tile a content of *size* bytes, in order, and together matched its SHA-256."""

    size: int
    parts: tuple[Part, ...]

    def encode(self) -> bytes:
        """The seal file's bytes: header, size, part names, and a CRC-32 of those lines."""
        lines = [SEAL_HEADER, str(self.size).encode(), *(p.name.encode() for p in self.parts)]
        body = b"\n".join(lines) + b"\n"
        return body + f"{zlib.crc32(body):08x}\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> Seal | None:
        """The seal *data* holds, None if it is damaged or not a sound tiling."""
        body, _, crc = data.rstrip(b"\n").rpartition(b"\n")
        body += b"\n"
        lines = body.split(b"\n")[:-1]
        if len(lines) < 2 or lines[0] != SEAL_HEADER or crc != b"%08x" % zlib.crc32(body):
            return None
        parts = []
        try:
            size = int(lines[1])
            for line in lines[2:]:
                part = Part.parse(line.decode())
                if part is None:
                    return None
                parts.append(part)
        except (ValueError, UnicodeDecodeError):
            return None
        return cls(size, tuple(parts)) if tiles(parts, size) else None


def tiles(parts: Sequence[Part], size: int) -> bool:
    """True if *parts*, in order, cover ``[0, size)`` exactly once (no gap, no overlap)."""
    position = 0
    for part in parts:
        if part.start != position:
            return False
        position = part.stop
    return position == size and size > 0


_parse_name = functools.lru_cache(maxsize=16384)(Part.parse)
"""``Part.parse`` remembered: a stream lists its entry at every cell (``ContentStore.enter``),
so a file read through would parse the names of its parts once per cell (quadratic)."""


def cells(start: int, data: Piece) -> list[tuple[int, memoryview]]:
    """*data* at *start* cut at cell boundaries: ``(offset, piece)`` pairs (views, no copy)."""
    pieces = []
    view = memoryview(data)
    position = start
    while view:
        take = min(len(view), CELL - position % CELL)
        pieces.append((position, view[:take]))
        view = view[take:]
        position += take
    return pieces


class ContentStore:
    """The cache directory at *root*; every method does file I/O (call it in a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / LAYOUT
        self._temp_prefix = f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"

    def prepare(self) -> bool:
        """Create the directory if needed; True if this process can write to it."""
        self.objects.mkdir(parents=True, exist_ok=True)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            try:
                self._write_new(tag, [CACHEDIR_TAG])
            except OSError as exc:
                if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
        return os.access(self.objects, os.W_OK)

    def entry(self, sha: str) -> Path:
        """The directory of the entry of content *sha*."""
        return self.objects / sha[:2] / sha

    def parts(self, sha: str) -> list[Part]:
        """The parts of *sha* on disk now, by start."""
        try:
            names = os.listdir(self.entry(sha))
        except FileNotFoundError:
            return []
        found = (_parse_name(name) for name in names)
        return sorted((part for part in found if part is not None), key=lambda p: p.start)

    def read(
        self, sha: str, part: Part, start: int, stop: int, *, trusted: bool
    ) -> list[bytes] | None:
        """Bytes ``[start, stop)`` of *part* in pieces of at most :data:`READ_PIECE` bytes
        (allocations of a few MiB are page-faulted in anew each time:
        ``read.reader.keep_freed_blocks``), or None if it is gone; DamagedPart if its bytes
        do not match its CRC (then it is deleted).

        The whole part is read and its CRC checked unless *trusted* (this process checked
        this very file before: ``source.ChecksumMemo``); then only ``[start, stop)``.
        """
        path = self.entry(sha) / part.name
        kept: list[bytes] = []
        try:
            with open(path, "rb") as file:
                if trusted:
                    file.seek(start - part.start)
                    wanted = stop - start
                    while wanted and (piece := file.read(min(wanted, READ_PIECE))):
                        kept.append(piece)
                        wanted -= len(piece)
                    return None if wanted else kept
                crc, offset = 0, part.start
                while piece := file.read(READ_PIECE):
                    crc = zlib.crc32(piece, crc)
                    if offset < stop and start < offset + len(piece):
                        kept.append(piece[max(start - offset, 0) : stop - offset])
                    offset += len(piece)
        except FileNotFoundError:
            return None
        if offset != part.stop or crc != part.crc:
            path.unlink(missing_ok=True)
            raise DamagedPart(path)
        return kept

    def drop(self, sha: str) -> int:
        """Delete every part of *sha* (its content failed verification); return how many.
        Claims and the use record stay. Raises OSError."""
        dropped = 0
        (self.entry(sha) / SEAL).unlink(missing_ok=True)  # before the parts it names
        for part in self.parts(sha):
            (self.entry(sha) / part.name).unlink(missing_ok=True)
            dropped += 1
        return dropped

    def identity(self, sha: str, part: Part) -> tuple[int, int, int] | None:
        """``(inode, size, mtime_ns)`` of a part file, None if it is gone."""
        try:
            info = os.stat(self.entry(sha) / part.name)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def store(self, sha: str, start: int, pieces: Sequence[Piece]) -> Part:
        """Write *pieces* (one after the other, all within one cell) at *start* as a part;
        return it. Raises OSError."""
        name = Part.name_of(start, pieces)
        directory = self.entry(sha)
        for attempt in (1, 2):  # the entry may be evicted between mkdir and rename
            directory.mkdir(parents=True, exist_ok=True)
            temp = directory / f"{self._temp_prefix}{secrets.token_hex(4)}"
            try:
                self._write_new(temp, pieces)
                os.rename(temp, directory / name)
                break
            except FileNotFoundError:
                temp.unlink(missing_ok=True)
                if attempt == 2:
                    raise
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
        part = Part.parse(name)
        assert part is not None
        return part

    def seal(self, sha: str, seal: Seal) -> None:
        """Write *seal* for *sha* (replacing any). Raises OSError."""
        directory = self.entry(sha)
        directory.mkdir(parents=True, exist_ok=True)
        temp = directory / f"{self._temp_prefix}{secrets.token_hex(4)}"
        try:
            self._write_new(temp, [seal.encode()])
            os.rename(temp, directory / SEAL)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def read_seal(self, sha: str) -> Seal | None:
        """The seal of *sha*, None if there is none or it is damaged."""
        try:
            return Seal.decode((self.entry(sha) / SEAL).read_bytes())
        except FileNotFoundError:
            return None

    def scan(self, sha: str) -> tuple[list[Part], Seal | None]:
        """The parts of *sha* on disk now, by start, and its seal (one worker-thread call)."""
        parts = self.parts(sha)
        return parts, self.read_seal(sha) if parts else None

    def claim(self, sha: str, cell: int) -> bool:
        """Claim the fetch of *cell* of *sha*: True if this call created the claim; a stale
        claim is taken over. Raises OSError when the directory cannot be written."""
        directory = self.entry(sha)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{CLAIM_PREFIX}{cell}"
        for _ in (1, 2):
            try:
                self._write_new(path, [f"{socket.gethostname()} {os.getpid()}\n".encode()])
                return True
            except FileExistsError:
                if not self.claimed(sha, cell):
                    path.unlink(missing_ok=True)  # stale: its claimer died
                    continue
                return False
        return False

    def claimed(self, sha: str, cell: int) -> bool:
        """True while someone holds a fresh claim on *cell* of *sha*."""
        return self.claim_mark(sha, cell) is not None

    def claim_mark(self, sha: str, cell: int) -> int | None:
        """The mtime (ns) of a fresh claim on *cell* of *sha*, None if there is none: no
        claim, one older than :data:`CLAIM_STALE`, or one made on this machine by a process
        no longer running. Its holder renews the mtime as bytes arrive (:meth:`renew`)."""
        path = self.entry(sha) / f"{CLAIM_PREFIX}{cell}"
        try:
            info = os.stat(path)
            host, _, pid = path.read_text(encoding="utf-8").strip().rpartition(" ")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return None
        if host == socket.gethostname() and pid.isdigit() and not _running(int(pid)):
            return None
        return info.st_mtime_ns if time.time() - info.st_mtime < CLAIM_STALE else None

    def renew(self, sha: str, cell: int) -> None:
        """Show that the claim on *cell* of *sha* makes progress (its mtime)."""
        try:
            os.utime(self.entry(sha) / f"{CLAIM_PREFIX}{cell}")
        except FileNotFoundError:
            pass

    def release(self, sha: str, cell: int) -> None:
        """Remove this process's claim on *cell* of *sha*."""
        (self.entry(sha) / f"{CLAIM_PREFIX}{cell}").unlink(missing_ok=True)

    def touch(self, sha: str) -> None:
        """Record a use of *sha* now (the mtime of its ``used`` file)."""
        path = self.entry(sha) / USE_RECORD
        try:
            os.utime(path)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def adopt(self, sha: str, source: Path) -> int:
        """Copy the file *source* (content *sha*, checked by the caller) into parts; return
        the bytes stored. Raises OSError."""
        stored = 0
        with open(source, "rb") as file:
            while data := file.read(CELL):
                self.store(sha, stored, [data])
                stored += len(data)
        self.touch(sha)
        return stored

    @staticmethod
    def _write_new(path: Path, pieces: Sequence[Piece]) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            write_all(descriptor, pieces)
        except BaseException:
            os.close(descriptor)
            path.unlink(missing_ok=True)
            raise
        os.close(descriptor)

    def enter(self, sha: str, cell: int, position: int) -> tuple[list[Part], bool]:
        """What a stream reaching *position* in *cell* needs in one call: the parts on disk
        and, unless one covers *position*, whether it could claim the cell."""
        parts = self.parts(sha)
        if any(part.start <= position < part.stop for part in parts):
            return parts, False
        return parts, self.claim(sha, cell)


def write_all(descriptor: int, pieces: Sequence[Piece]) -> None:
    """Write *pieces* one after the other to *descriptor*, at most :data:`WRITE_SPAN` bytes
    per ``write`` (a larger piece in slices; a part usually arrives as smaller chunks)."""
    for piece in pieces:
        view = memoryview(piece)
        while view:
            view = view[os.write(descriptor, view[:WRITE_SPAN]) :]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DamagedPart(Exception):
    """A part whose bytes do not match its CRC (torn write or bit rot); it was deleted."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"damaged cache part {path} deleted")
        self.path = path

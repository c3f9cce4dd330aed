"""Files written through the mount, as the write path tracks them (no I/O here).

Life of a :class:`StagedFile`::

    STAGED --commit--> PENDING --lands--> LANDED
      |                  |   ^              |
      +----discard-------+   +---rename-----+   (lands again under the new name)
              v
          DISCARDED

- STAGED: the content is a spool staging file; writes, truncates and reads are allowed.
- PENDING: the content is frozen and journaled (``spool.py``); ``landing.py`` uploads it,
  now and in the background, until it lands. It survives unmounts and crashes.
- LANDED: the artifact exists and is attached to the run; ``artifact`` is the server's record.
- DISCARDED: unlinked before it landed; nothing is uploaded.

Only ``upload.py`` and ``landing.py`` change a StagedFile (its underscored attributes are
theirs); the filesystem reads the public ones.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import trio

from simvuefs.errors import LocalError
from simvuefs.models import Artifact
from simvuefs.write.spool import JournalRecord


class FileState(enum.Enum):
    """Where a written file is in its life (module docstring)."""

    STAGED = "staged"
    PENDING = "pending"
    LANDED = "landed"
    DISCARDED = "discarded"


class StagedFile:
    """A file written through the mount, from its creation until it lands or is discarded.

    *size* and *mtime* follow the writes; *checksum* is set at commit; *artifact* once
    LANDED. *spool_id* names its files in the spool (random, never derived from names).

    Locks: ``_lock`` serialises content changes and state transitions (held briefly, or for
    the hashing at commit); ``_attempt_lock`` lets one upload attempt run at a time (held
    for the upload). A PENDING file has at most one background retry loop (``_retrying``).

    Write-behind (``upload.py``): accepted writes wait in ``_queue`` (offset, data, growth),
    in order, until one flusher task at a time (``_flushing``) puts them on disk and hashes
    them in a worker thread; ``_unwritten`` counts their bytes (also those being written).
    While the flusher runs, only it touches ``_hasher`` and ``_hashed``. A write it could
    not store sets ``_write_error``, which every later write, truncate and commit raise.
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
        self._queue: list[tuple[int, bytes, int]] = []
        self._unwritten = 0
        self._flushing = False
        self._flushed = trio.Event()  # set and replaced after each batch the flusher writes
        self._write_error: LocalError | None = None
        self._record: JournalRecord | None = None  # set while PENDING
        self._lock = trio.Lock()
        self._attempt_lock = trio.Lock()
        self._attempt_scope: trio.CancelScope | None = None
        self._uploading = False
        self._retrying = False
        self._wake = trio.Event()
        self._generation = 0  # bumped at each landing, so old retention timers do nothing

    def _wake_flush_waiters(self) -> None:
        """Wake the tasks waiting for the flusher (``upload._written``); they look again."""
        self._flushed.set()
        self._flushed = trio.Event()

    @classmethod
    def from_record(cls, record: JournalRecord, data: Path) -> StagedFile:
        """A PENDING file for a journal record found at start, its content at *data*."""
        f = cls(record.id, record.run_id, record.category, record.name, data, 0.0)
        f.mtime = record.created.timestamp()
        f.state = FileState.PENDING
        f.size = record.size
        f.checksum = record.checksum
        f._hasher = None
        f._record = record
        return f

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

    @property
    def attached(self) -> bool:
        """True when an artifact of this file is attached to the run (it shows there)."""
        return self.state is FileState.LANDED or (
            self._record is not None and self._record.stage == "attached"
        )

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

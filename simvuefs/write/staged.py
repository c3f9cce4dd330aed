"""Files written through the mount, as the write path tracks them (no I/O here).

Life of a :class:`StagedFile`::

    STAGED --commit--> PENDING --retire--> LANDED
      |                  |   ^               |
      +----discard-------+   +---relaunch----+   (a rename: lands again under the new name)
              v
          DISCARDED

- STAGED: the content is a spool staging file; writes, truncates and reads are allowed. An
  ``fsync`` keeps a durable copy (*checkpoint*, ``spool.py``) without changing the state.
- PENDING: the content is frozen and journaled (``spool.py``); ``landing.py`` uploads it,
  now and in the background, until it lands. It survives unmounts and crashes. A PENDING
  file the server refused for good is *failed* (``refusal.py``): kept, not attempted again
  until ``simvuefs pending retry`` or a rename clears that.
- LANDED: the artifact exists and is attached to the run; ``artifact`` is the server's record.
- DISCARDED: unlinked before it landed; nothing is uploaded.

Each arrow is a method of :class:`StagedFile`; only ``upload.py`` and ``landing.py`` call
them, holding ``lock``, after the spool I/O that makes the new state true on disk.
``update_record`` (a new journal record of a PENDING file, no change of state) is called
after the record is saved, holding ``attempt_lock`` (a landing step, a failed attempt, a
retry), or both locks (a rename). The filesystem only reads a StagedFile.
"""

from __future__ import annotations

import enum
import errno
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import trio

from simvuefs.errors import LocalError
from simvuefs.models import Artifact
from simvuefs.write.spool import JournalRecord
from simvuefs.write.writebehind import FileWrites


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
    *replaces* maps artifacts of the run this file replaces when it lands (an input it
    overwrites, or that a rename put it in place of) to the checksum each must still hold to
    be deleted (``deletes.py``). *checkpoint* is the record of its last fsync while STAGED.
    *landed_at* is the ``time.monotonic()`` of its last landing.
    *record* is its journal record while PENDING; *data* is where its content is now
    (staging, pending or landed); *fd* is open while the filesystem holds handles.

    Locks: ``lock`` serialises content changes and state transitions (held briefly, or for
    the hashing at commit); ``attempt_lock`` lets one upload attempt run at a time (held
    for the upload). Writes not yet on disk are in *writes* (``writebehind.py``); landing
    attempts and retries are ``landing.py``'s.
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
        self.replaces: dict[str, str] = {}
        self.checkpoint: JournalRecord | None = None
        self.landed_at = 0.0
        self.writes = FileWrites()
        self.lock = trio.Lock()
        self.attempt_lock = trio.Lock()
        self._data = data
        self._record: JournalRecord | None = None
        self._fd: int | None = None
        self._handles = 0
        self._writers = 0
        self._generation = 0  # bumped at each landing, so old retention timers do nothing

    @classmethod
    def from_record(cls, record: JournalRecord, data: Path) -> StagedFile:
        """A PENDING file for a journal record found at start, its content at *data*."""
        mtime = record.created.timestamp()
        f = cls(record.id, record.run_id, record.category, record.name, data, mtime)
        f.size = record.size
        f.commit(record, data)
        return f

    @property
    def key(self) -> tuple[str, str, str]:
        """``(run_id, category, name)``: at most one live file has a given key."""
        return (self.run_id, self.category, self.name)

    @property
    def record(self) -> JournalRecord | None:
        """The journal record of a PENDING file, as last saved (None otherwise)."""
        return self._record

    @property
    def data(self) -> Path:
        """Where the content is now: staging, pending or landed (``spool.py``)."""
        return self._data

    @property
    def generation(self) -> int:
        """How often the file became LANDED; a retention timer acts only on its own."""
        return self._generation

    @property
    def attempts(self) -> int:
        """Failed upload attempts so far (0 unless PENDING)."""
        return self._record.attempts if self._record else 0

    @property
    def last_error(self) -> str:
        """Why the last upload attempt failed ("" if none did)."""
        return self._record.last_error if self._record else ""

    @property
    def failed(self) -> bool:
        """True when the server refused the upload for good (not retried; module docstring)."""
        return self._record is not None and self._record.failed != ""

    @property
    def attached(self) -> bool:
        """True when an artifact of this file is attached to the run (it shows there)."""
        return self.state is FileState.LANDED or (
            self._record is not None and self._record.stage == "attached"
        )

    # -- open handles ----------------------------------------------------------------------

    @property
    def fd(self) -> int | None:
        """The descriptor of the content while handles are open (None otherwise)."""
        return self._fd

    @property
    def writing(self) -> bool:
        """True while a handle open for writing exists."""
        return self._writers > 0

    @property
    def idle(self) -> bool:
        """True when the descriptor is open but no handle is: it should be closed."""
        return self._handles == 0 and self._fd is not None

    def add_handle(self, *, write: bool, fd: int | None = None) -> None:
        """Count one more open handle; *fd* is the descriptor just opened, if it was not."""
        if fd is not None:
            assert self._fd is None, "one descriptor per file"
            self._fd = fd
        self._handles += 1
        self._writers += write

    def drop_handle(self, *, write: bool) -> None:
        """Count one handle less (the caller closes the descriptor when idle)."""
        self._handles -= 1
        self._writers -= write

    def take_fd(self) -> int | None:
        """Forget the descriptor and return it, for the caller to close."""
        fd, self._fd = self._fd, None
        return fd

    def writable_fd(self) -> int:
        """The descriptor to write through; writes to a discarded but open file succeed.

        Raises LocalError: EBADF when committed or not open; a queued write's error.
        """
        if self.state not in (FileState.STAGED, FileState.DISCARDED):
            raise LocalError(
                f"{self.name} is committed and can no longer change", errno=errno.EBADF
            )
        if self._fd is None:
            raise LocalError(f"{self.name} is not open", errno=errno.EBADF)
        self.writes.raise_error()
        return self._fd

    # -- transitions (module docstring) ------------------------------------------------------

    def rename(self, name: str) -> None:
        """Give a STAGED file the name *name* (nothing is journaled yet)."""
        assert self.state is FileState.STAGED
        self.name = name

    def update_record(self, record: JournalRecord) -> None:
        """Keep *record*, the journal record of this PENDING file as just saved (a step of
        its landing, a failed attempt, a rename: the name follows the record)."""
        assert self.state is FileState.PENDING
        self._record = record
        self.name = record.name

    def commit(self, record: JournalRecord, data: Path) -> None:
        """STAGED -> PENDING: the content is sealed at *data* and journaled as *record*."""
        assert self.state is FileState.STAGED
        self.state = FileState.PENDING
        self.checksum = record.checksum
        self.checkpoint = None
        self._record = record
        self._data = data

    def relaunch(self, record: JournalRecord, data: Path) -> None:
        """LANDED -> PENDING: the landed content, back at *data*, is journaled as *record*
        to land again under the record's name (a rename)."""
        assert self.state is FileState.LANDED
        self.state = FileState.PENDING
        self.name = record.name
        self.artifact = None
        self._record = record
        self._data = data
        self._generation += 1

    def retire(self, artifact: Artifact, data: Path) -> None:
        """PENDING -> LANDED: *artifact* is attached; the content is kept briefly at *data*."""
        assert self.state is FileState.PENDING
        self.state = FileState.LANDED
        self.artifact = artifact
        self.landed_at = time.monotonic()
        self.replaces = {}
        self._record = None
        self._data = data
        self._generation += 1

    def discard(self) -> None:
        """STAGED or PENDING -> DISCARDED: unlinked before it landed."""
        self.state = FileState.DISCARDED
        self.checkpoint = None
        self._record = None

    def __repr__(self) -> str:
        return f"<StagedFile {self.run_id}/{self.category}/{self.name} {self.state.value}>"


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """A snapshot of one pending upload, for listings, xattrs and ``simvuefs status``.

    *state* is ``uploading`` while an attempt runs, ``failed`` once the server refused it
    for good (*last_error* says why), else ``waiting``.
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
            state="uploading" if uploading else "failed" if record.failed else "waiting",
            spool_id=record.id,
        )

"""OfflineClient: a Simvue backend made of the official client's offline cache, no server.

It serves what the tree, the reader and the uploader use (the
:class:`~simvuefs.backends.protocol.SimvueBackend` protocol) from the cache directory
of protocol 6.1:

- runs are the records ``runs/*.json``; the artifacts of a run in a category are the
  ``artifacts/*.json`` records whose ``runs`` mapping names that run and category;
- content is read from local files: a file artifact's ``original_path`` (the file the
  sender uploads) and an object artifact's ``artifacts/<id>.object``. ``Artifact.url`` is
  that file's ``file:`` URL (None when the record does not say where its content is).
  Missing content, or a file artifact whose size differs from its record, is
  ``LocalError(EIO)`` on read;
- the upload sequence lands files as the official client's offline mode would
  (:mod:`simvuefs.backends.offline_drafts`): ``create_artifact`` writes a draft, ``upload_content``
  puts the content in a snapshot, ``mark_uploaded`` has nothing to do (the sender marks it
  when it uploads), ``attach`` writes the record, ``get_artifact`` reads it back,
  ``delete_artifact`` removes only what this mount created.

Invariants:

- All file I/O runs in worker threads; each call finishes within ``request_timeout``
  (``upload_content``: scaled by size, like the online client) or raises
  DeadlineExceeded, so a hung network filesystem cannot hang a FUSE request forever.
- Listings are read afresh on every call (records are parsed again only when they change):
  the tree's TTL caches set the pace, so what the official client writes meanwhile appears
  within the metadata TTL. Unusable records are skipped with a rate-limited warning.
- Nothing in the cache is modified except what :mod:`simvuefs.backends.offline_drafts` owns.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from urllib.request import url2pathname

import trio

from simvuefs.backends.offline_cache import (
    ARTIFACTS,
    RUNS,
    ArtifactRecord,
    RecordDirectory,
    artifact_parser,
    parse_run,
    skip_warner,
)
from simvuefs.backends.offline_drafts import Drafts
from simvuefs.config import MIB, Settings
from simvuefs.errors import ConfigError, DeadlineExceeded, LocalError, NotFound
from simvuefs.localio import local_error
from simvuefs.models import CATEGORIES, Artifact, Run, UploadSlot

log = logging.getLogger(__name__)

T = TypeVar("T")

# Largest piece a range body reads from a file at once (the reader asks for blocks).
READ_CHUNK = 1 * MIB
# Storing content may take 10 s plus 1 s per MiB, as an upload may online (client.py).
STORE_BASE_SECONDS = 10.0
STORE_MIN_BYTES_PER_SECOND = 1 * MIB


@dataclass(frozen=True)
class OfflineStats:
    """Counters since the client was opened."""

    bytes_read: int
    files_opened: int
    artifacts_created: int


def content_path(artifact: Artifact) -> Path:
    """Return where the content of *artifact* (listed by an OfflineClient) is."""
    if artifact.url is None or not artifact.url.startswith("file:"):
        raise LocalError(
            f"artifact {artifact.id}: its record does not say where its content is",
            errno=errno.EIO,
        )
    return Path(url2pathname(urlsplit(artifact.url).path))


class FileRange:
    """Bytes ``start`` up to ``stop`` of an open file, read in worker threads.

    Like the online client's RangeStream: ``status`` 206, ``total_size`` the file's size.
    """

    status = 206

    def __init__(self, client: OfflineClient, fd: int, start: int, stop: int, size: int) -> None:
        self.total_size = size
        self._client = client
        self._fd = fd
        self._position = start
        self._stop = stop

    async def receive(self, max_bytes: int) -> bytes:
        """Return the next 1..*max_bytes* bytes of the range, or ``b""`` at its end."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        wanted = min(max_bytes, self._stop - self._position, READ_CHUNK)
        if wanted <= 0:
            return b""
        data = await self._client.pread(self._fd, wanted, self._position)
        if not data:
            raise LocalError("the content file shrank while being read", errno=errno.EIO)
        self._position += len(data)
        return data


class OfflineClient:
    """The offline cache at ``settings.offline_directory`` as a Simvue backend."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.cache = settings.offline_directory
        warner = skip_warner()
        self._runs = RecordDirectory(self.cache / RUNS, parse_run, warner)
        self._artifacts: RecordDirectory[ArtifactRecord] = RecordDirectory(
            self.cache / ARTIFACTS, artifact_parser(self.cache), warner
        )
        self._drafts = Drafts(self.cache)
        self._bytes_read = 0
        self._files_opened = 0
        self._created = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[OfflineClient]:
        """Yield a client of the offline cache; ConfigError (one line) if it is unusable.

        The cache must be an existing, readable directory. Leftovers of interrupted writes
        are tidied first; in a cache this user cannot write to, writes will fail (noted in
        the log).
        """
        client = cls(settings)
        await trio.to_thread.run_sync(client.check_directory)
        yield client
        log.debug("offline cache: %s", client.statistics())

    def check_directory(self) -> None:
        """Raise ConfigError (one line) unless the cache is a readable directory; tidy
        leftovers of interrupted writes (file I/O: call it from a worker thread)."""
        cache = self.cache
        if not cache.exists():
            raise ConfigError(f"offline cache directory {cache} does not exist")
        if not cache.is_dir():
            raise ConfigError(f"offline cache {cache} is not a directory")
        if not os.access(cache, os.R_OK | os.X_OK):
            raise ConfigError(f"offline cache directory {cache} is not readable")
        try:
            os.listdir(cache)
            self._drafts.prepare()
        except PermissionError as exc:
            log.info("offline cache %s: %s; files cannot be written", cache, exc.strerror)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise ConfigError(f"cannot use the offline cache {cache}: {exc.strerror}") from None
            log.info("offline cache %s is read-only: files cannot be written", cache)

    def statistics(self) -> OfflineStats:
        """Return a snapshot of the counters."""
        return OfflineStats(self._bytes_read, self._files_opened, self._created)

    def counters(self) -> tuple[str, dict[str, Any]]:
        """Return ``"offline"`` and the counters, for ``simvuefs status``."""
        return "offline", dataclasses.asdict(self.statistics())

    async def pread(self, fd: int, length: int, offset: int) -> bytes:
        """Read up to *length* bytes at *offset* of the open content file *fd* (counted)."""
        data = await self._in_thread("read", os.pread, fd, length, offset)
        self._bytes_read += len(data)
        return data

    async def _in_thread(
        self, what: str, function: Callable[..., T], *args: Any, seconds: float | None = None
    ) -> T:
        """Run *function* in a worker thread within the deadline; OSError -> LocalError."""
        limit = self._settings.request_timeout if seconds is None else seconds
        try:
            with trio.fail_after(limit):
                return await trio.to_thread.run_sync(function, *args, abandon_on_cancel=True)
        except trio.TooSlowError:
            raise DeadlineExceeded(f"offline cache: {what} took over {limit:g} s") from None
        except OSError as exc:
            raise local_error(exc, f"offline cache: {what}") from None

    # -- runs and artifacts -----------------------------------------------------------------

    async def list_runs(self, filters: Sequence[str] = ()) -> list[Run]:
        """Return every usable run record of the cache (*filters*, the server's, are
        ignored: callers check what they show themselves)."""
        runs = await self._in_thread("list runs", self._runs.scan)
        return list(runs.values())

    async def whoami(self) -> None:
        """None: the cache names no users; every run in it is the user's own."""
        return None

    async def get_run(self, run_id: str) -> Run:
        """Return one run; NotFound if the cache has no usable record of it."""
        run = await self._in_thread(f"read run {run_id}", self._runs.get, run_id)
        if run is None:
            raise NotFound(f"no run {run_id} in the offline cache {self.cache}", status=404)
        return run

    async def list_artifacts(
        self,
        run_id: str,
        category: str | None = None,
        name: str | None = None,
        known: Mapping[str, Artifact] | None = None,
    ) -> list[Artifact]:
        """Return the artifacts attached to *run_id* (in *category*, called *name*).

        Each carries its category in this run. NotFound when the run has none and no
        record either. *known* is not used: the cache's records are made at each listing.
        """
        records = await self._in_thread("list artifacts", self._artifacts.scan)
        found = [
            record.artifact.replace(category=record.runs[run_id])
            for record in records.values()
            if run_id in record.runs
        ]
        if not found:
            await self.get_run(run_id)
        return [
            artifact
            for artifact in found
            if category in (None, artifact.category) and name in (None, artifact.name)
        ]

    async def get_artifact(self, artifact_id: str) -> Artifact:
        """Return one artifact from its record; NotFound if there is none."""
        return await self._in_thread(
            f"read artifact {artifact_id}", self._drafts.artifact, artifact_id
        )

    # -- content ----------------------------------------------------------------------------

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[FileRange]:
        """Open bytes *start*..*end* (inclusive; None = to the end) of the content."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}-{end}")
        fd, size = await self._in_thread(f"open {artifact.id}", self._open_content, artifact)
        self._files_opened += 1
        try:
            stop = size if end is None else min(end + 1, size)
            yield FileRange(self, fd, start, stop, size)
        finally:
            os.close(fd)

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Return *length* bytes from *start* (fewer only at the end of the content); also
        hand them to *on_chunk*, in one piece."""
        data = await self._in_thread(
            f"read {artifact.id}", self._read_content, artifact, start, length
        )
        self._files_opened += 1
        self._bytes_read += len(data)
        if on_chunk is not None and data:
            on_chunk(data)
        return data

    async def content_length(self, artifact: Artifact) -> int:
        """Return the real content size (object artifacts' records say ``len + 33``)."""
        info = await self._in_thread(f"stat {artifact.id}", os.stat, content_path(artifact))
        return info.st_size

    def _open_content(self, artifact: Artifact) -> tuple[int, int]:
        """Open the content of *artifact*; return the descriptor and the size."""
        fd = os.open(content_path(artifact), os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if not artifact.is_object and size != artifact.size:
                raise LocalError(
                    f"artifact {artifact.id}: {content_path(artifact)} holds {size} bytes, "
                    f"its record says {artifact.size} (changed since it was saved)",
                    errno=errno.EIO,
                )
        except BaseException:
            os.close(fd)
            raise
        return fd, size

    def _read_content(self, artifact: Artifact, start: int, length: int) -> bytes:
        fd, _ = self._open_content(artifact)
        try:
            parts: list[bytes] = []
            got = 0
            while got < length:
                chunk = os.pread(fd, length - got, start + got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    # -- the upload sequence ----------------------------------------------------------------

    async def create_artifact(
        self,
        *,
        name: str,
        original_path: str,
        size: int,
        mime_type: str,
        checksum: str,
        metadata: dict[str, Any] | None = None,
    ) -> UploadSlot:
        """Write the draft of a new file artifact (*original_path* is the snapshot's, later).

        The slot's ``url`` is the cache's ``artifacts/`` directory: never None, so the
        content is always stored (the cache does not deduplicate).
        """
        ident = await self._in_thread(
            f"create artifact {name}",
            lambda: self._drafts.create(
                name=name, size=size, mime_type=mime_type, checksum=checksum, metadata=metadata
            ),
        )
        self._created += 1
        return UploadSlot(artifact_id=ident, url=(self.cache / ARTIFACTS).as_uri())

    async def upload_content(self, slot: UploadSlot, path: Path, size: int, filename: str) -> None:
        """Store the *size* bytes of *path* as the content of the slot's artifact."""
        seconds = max(
            self._settings.request_timeout,
            STORE_BASE_SECONDS + size / STORE_MIN_BYTES_PER_SECOND,
        )
        await self._in_thread(
            f"store {filename}",
            self._drafts.store,
            slot.artifact_id,
            path,
            size,
            seconds=seconds,
        )

    async def mark_uploaded(self, artifact_id: str) -> None:
        """Nothing to do offline: the sender marks the artifact when it uploads it."""

    async def attach(self, run_id: str, artifact_id: str, category: str) -> None:
        """Write the artifact's record, attached to *run_id* in *category*."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown artifact category {category!r}")
        await self._in_thread(
            f"attach {artifact_id}", self._drafts.attach, artifact_id, run_id, category
        )

    async def delete_artifact(self, artifact_id: str) -> None:
        """Delete an artifact this mount created (AuthError 403 for any other)."""
        await self._in_thread(f"delete {artifact_id}", self._drafts.delete, artifact_id)

    async def artifact_runs(self, artifact_id: str) -> list[str]:
        """Return the runs the artifact's record attaches it to ([] without a record)."""
        records = await self._in_thread("list artifacts", self._artifacts.scan)
        record = records.get(artifact_id)
        return [] if record is None else list(record.runs)

"""The official client's offline cache directory (protocol 6.1): its layout, and reading it.

Everything here is synchronous file I/O; :mod:`simvuefs.backends.offline` calls it from
worker threads.
What this mount writes into the cache is in :mod:`simvuefs.backends.offline_drafts`.

Layout (``<cache>`` = ``SIMVUE_OFFLINE_DIRECTORY``, ``[offline] cache`` or ``~/.simvue``)::

    runs/<run id>.json              run records (read only)
    artifacts/<artifact id>.json    artifact records, ``runs`` = {run id: category}
    artifacts/<artifact id>.object  content of an object artifact
    artifacts/<stem>_<YYYY-mm-dd_HH-MM-SS_mmm>.file   content copies ("snapshots")
    server_ids/<offline id>.txt     written by the sender once it sent an object
    simvuefs/drafts/<id>.json       ours: an artifact between create and attach
    simvuefs/created/<id>.json      ours: the record of an artifact this mount created

Invariants:

- Nothing here writes: records are only read.
- A record that cannot be used (bad JSON, missing fields) is skipped with a rate-limited
  warning; it is parsed again only once it changes (files are remembered by inode, size and
  mtime). A record modified less than :data:`SETTLE_SECONDS` ago may be half written by
  the official client (it writes in place), so it is skipped silently until it settles.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from simvuefs.errors import NotFound, ProtocolError
from simvuefs.localio import WARNING_INTERVAL, RateLimitedWarner
from simvuefs.models import CATEGORIES, Artifact, Run

log = logging.getLogger(__name__)

T = TypeVar("T")

RUNS = "runs"
ARTIFACTS = "artifacts"
SERVER_IDS = "server_ids"
OWN = "simvuefs"
"""Our own directory inside the cache; the sender never looks into it."""
SETTLE_SECONDS = 2.0
"""A record younger than this that does not parse may still be being written."""
SKIPPED = "offline cache: skipped %s: %s"
"""The log line of a skipped record (its path, why)."""
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def check_id(ident: str, kind: str) -> str:
    """Return *ident* if it can name a file in the cache; NotFound otherwise."""
    if not _SAFE_ID.fullmatch(ident):
        raise NotFound(f"no {kind} {ident!r} in the offline cache", status=404)
    return ident


def skip_warner() -> RateLimitedWarner:
    """Return a warner for skipped records: WARNING at most once per WARNING_INTERVAL."""
    return RateLimitedWarner(log, WARNING_INTERVAL)


# -- reading records ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """An artifact record: the artifact (``url`` = its content as a ``file:`` URL, None
    when the record does not say where it is) and the runs it is attached to."""

    artifact: Artifact
    runs: Mapping[str, str]


Stamp = tuple[int, int, int]
"""What tells a changed file: inode, size, mtime (ns)."""


def _stamp(info: os.stat_result) -> Stamp:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _mtime(info: os.stat_result) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=info.st_mtime_ns // 1000)


class RecordDirectory(Generic[T]):
    """The ``*.json`` records of one cache directory, parsed once per change.

    *parse(ident, data, info)* turns a record into a T or raises ProtocolError. Thread-safe:
    scans are serialised.
    """

    def __init__(
        self,
        directory: Path,
        parse: Callable[[str, Any, os.stat_result], T],
        warner: RateLimitedWarner,
    ) -> None:
        self.directory = directory
        self._parse = parse
        self._warner = warner
        self._seen: dict[str, tuple[Stamp, T | None]] = {}
        self._lock = threading.Lock()

    def scan(self) -> dict[str, T]:
        """Return every usable record, by id (the file's stem)."""
        found: dict[str, T] = {}
        with self._lock:
            seen: dict[str, tuple[Stamp, T | None]] = {}
            for ident, path in self._paths():
                record = self._load(ident, path, seen)
                if record is not None:
                    found[ident] = record
            self._seen = seen
        return found

    def get(self, ident: str) -> T | None:
        """Return the record called *ident*, or None if it is absent or unusable."""
        with self._lock:
            return self._load(ident, self.directory / f"{ident}.json", self._seen)

    def _paths(self) -> Iterator[tuple[str, Path]]:
        try:
            with os.scandir(self.directory) as entries:
                names = [e.name for e in entries if e.name.endswith(".json")]
        except FileNotFoundError:
            return
        for name in sorted(names):
            yield name[: -len(".json")], self.directory / name

    def _load(self, ident: str, path: Path, seen: dict[str, tuple[Stamp, T | None]]) -> T | None:
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warner.warn(SKIPPED, path, exc.strerror or str(exc))
            return None
        known = self._seen.get(ident)
        if known is not None and known[0] == _stamp(info):
            seen[ident] = known
            return known[1]
        record: T | None = None
        try:
            data = json.loads(path.read_bytes())
            record = self._parse(ident, data, info)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, ProtocolError) as exc:
            if time.time() - info.st_mtime < SETTLE_SECONDS:
                log.debug("%s is not readable yet (%s); maybe half written", path, exc)
                return None  # not remembered: read again next time
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._warner.warn(SKIPPED, path, reason)
        seen[ident] = (_stamp(info), record)
        return record


def parse_run(ident: str, data: Any, info: os.stat_result) -> Run:
    """Build a Run from ``runs/<ident>.json`` (ProtocolError if it has no name)."""
    return Run.from_json(data, run_id=ident)


def artifact_parser(cache: Path) -> Callable[[str, Any, os.stat_result], ArtifactRecord]:
    """Return the parser of ``artifacts/<id>.json`` records of the cache *cache*.

    File artifacts' content is at ``original_path`` (what the sender uploads), else at an
    absolute ``file_path``; object artifacts' at ``artifacts/<id>.object``. ``created`` is
    the record's, else the file's modification time.
    """

    def parse(ident: str, data: Any, info: os.stat_result) -> ArtifactRecord:
        if not isinstance(data, dict):
            raise ProtocolError(f"expected a JSON object, got {type(data).__name__}")
        kind = data.get("obj_type")
        if kind not in ("FileArtifact", "ObjectArtifact"):
            raise ProtocolError(f"unknown obj_type {kind!r}")
        runs = data.get("runs")
        if not isinstance(runs, dict):
            raise ProtocolError("no 'runs' mapping")
        content: Path | None = cache / ARTIFACTS / f"{ident}.object"
        original = data.get("original_path")
        if kind == "ObjectArtifact":
            original = ""
        elif not isinstance(original, str) or not original:
            raise ProtocolError("a file artifact without 'original_path'")
        else:
            paths = (original, data.get("file_path"))
            content = next((Path(p) for p in paths if isinstance(p, str) and p[:1] == "/"), None)
        fields = {**data, "id": ident, "original_path": original, "uploaded": False}
        artifact = Artifact.from_json({**fields, "url": content.as_uri() if content else None})
        if artifact.created is None:
            artifact = artifact.replace(created=_mtime(info))
        attached = {
            run: category
            for run, category in runs.items()
            if isinstance(run, str) and category in CATEGORIES
        }
        return ArtifactRecord(artifact, attached)

    return parse


def run_is_known(cache: Path, run_id: str) -> bool:
    """True when the sender can map *run_id*: its record, or its server id, exists."""
    check_id(run_id, "run")
    return (cache / RUNS / f"{run_id}.json").exists() or (
        cache / SERVER_IDS / f"{run_id}.txt"
    ).exists()

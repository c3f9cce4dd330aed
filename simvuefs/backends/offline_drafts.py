"""What this mount writes into an offline cache: file artifacts, as the official client would.

Everything here is synchronous file I/O; :mod:`simvuefs.backends.offline` calls it from
worker threads.

A file written into ``runs/<run>/input/`` of an offline mount goes through three steps, the
upload sequence of :mod:`simvuefs.write.landing` mapped onto the cache:

1. ``create``: a *draft* ``simvuefs/drafts/<id>.json`` (name, size, MIME type, checksum,
   metadata) under a fresh ``offline_<uuid1>`` id. Nothing in ``artifacts/`` yet.
2. ``store``: the content goes to ``artifacts/<stem>_<YYYY-mm-dd_HH-MM-SS_mmm>.file`` (a
   hard link to the spooled content when possible, else a checked copy), like the client's
   ``snapshot=True`` copy, so it stays there after unmount; the draft records the path.
3. ``attach``: the record ``artifacts/<id>.json`` appears whole (written beside the drafts,
   fsynced, renamed), byte for byte what ``FileArtifact.new(..., offline=True,
   snapshot=True)`` + ``attach_to_run(run, category)`` writes; a copy goes to
   ``simvuefs/created/<id>.json`` and the draft is removed.

The sender uploads such a record like any other: it reads ``original_path`` (the
snapshot), attaches the artifact to the run's online id, then deletes the record and the
snapshot (it deletes snapshots it finds in ``artifacts/``).

Invariants:

- Only ids with a draft or a ``created/`` copy are ever rewritten or deleted; every other
  record of the cache is left untouched.
- Each step can be repeated after a crash: the journal of the spool resumes at the step it
  reached, and every step here reads its state from the draft, never from memory.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from simvuefs.backends.offline_cache import (
    ARTIFACTS,
    OWN,
    artifact_parser,
    check_id,
    run_is_known,
)
from simvuefs.errors import AuthError, IntegrityError, NotFound, ProtocolError
from simvuefs.localio import TEMP_SUFFIX, copy_hashed, fsync_dir, write_atomically
from simvuefs.models import Artifact

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "%Y-%m-%d_%H-%M-%S_%f"
"""The client's snapshot time stamp; its last 3 digits are cut (milliseconds)."""


def new_artifact_id() -> str:
    """Return an id like the client's offline ids: ``offline_<uuid1>``."""
    return f"offline_{uuid.uuid1()}"


def record_bytes(record: Mapping[str, Any]) -> bytes:
    """Serialise *record* exactly as the client's ``_cache`` does (``json.dump(indent=2)``)."""
    return json.dumps(record, indent=2).encode("utf-8")


def file_record(draft: Mapping[str, Any], runs: Mapping[str, str]) -> dict[str, Any]:
    """The record of ``FileArtifact.new(offline=True, snapshot=True)`` + ``attach_to_run``.

    Keys in the client's order; ``storage`` is null, as for a run without a storage;
    ``original_path`` and ``file_path`` are both the snapshot.
    """
    return {
        "obj_type": "FileArtifact",
        "name": draft["name"],
        "storage": None,
        "original_path": draft["snapshot"],
        "size": draft["size"],
        "mime_type": draft["mime_type"],
        "checksum": draft["checksum"],
        "metadata": draft["metadata"],
        "file_path": draft["snapshot"],
        "runs": dict(runs),
    }


def snapshot_name(stem: str, when: datetime) -> str:
    """``<stem>_<YYYY-mm-dd_HH-MM-SS_mmm>.file``, the client's snapshot name."""
    return f"{stem}_{when.strftime(SNAPSHOT_FORMAT)[:-3]}.file"


class Drafts:
    """The artifacts this mount creates in the offline cache *cache* (module docstring)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.artifacts = cache / ARTIFACTS
        self.drafts = cache / OWN / "drafts"
        self.created = cache / OWN / "created"
        self._parse = artifact_parser(cache)

    def prepare(self) -> None:
        """Create our directories; drop leftovers of attempts that can never resume.

        Temp files, drafts whose content was never stored (their upload restarts with a new
        artifact), and ``created/`` copies whose record the sender has sent.
        """
        if not self.drafts.parent.exists():
            return  # nothing was ever written here
        for directory in (self.drafts, self.created):
            directory.mkdir(parents=True, exist_ok=True)
        for path in self.drafts.iterdir():
            if path.suffix == TEMP_SUFFIX:
                path.unlink(missing_ok=True)
            elif path.suffix == ".json":
                try:
                    stored = self._read(path).get("snapshot")
                except ProtocolError as exc:
                    log.warning("left alone: %s", exc)
                    continue
                if stored is None:
                    path.unlink(missing_ok=True)
        for path in self.created.glob("*.json"):
            if not (self.artifacts / path.name).exists():
                path.unlink(missing_ok=True)

    # -- the three steps --------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        size: int,
        mime_type: str,
        checksum: str,
        metadata: dict[str, Any] | None,
    ) -> str:
        """Write the draft of a new artifact; return its id."""
        ident = new_artifact_id()
        draft = {
            "name": name,
            "size": size,
            "mime_type": mime_type,
            "checksum": checksum,
            "metadata": metadata,
            "snapshot": None,
        }
        self.drafts.mkdir(parents=True, exist_ok=True)
        self.created.mkdir(parents=True, exist_ok=True)
        self._save_draft(ident, draft)
        return ident

    def store(self, ident: str, source: Path, size: int) -> Path:
        """Put the content of draft *ident* (the *size* bytes at *source*) in its snapshot."""
        draft = self._draft(ident)
        if size != draft["size"]:
            raise IntegrityError(f"artifact {ident}: {size} bytes to store, {draft['size']} said")
        if draft["snapshot"] is not None:
            Path(draft["snapshot"]).unlink(missing_ok=True)  # an earlier, interrupted store
        self.artifacts.mkdir(parents=True, exist_ok=True)
        snapshot = self._reserve_snapshot(draft["name"])
        try:
            self._fill(source, snapshot, size, draft["checksum"], self._temp(ident, "data"))
            self._save_draft(ident, {**draft, "snapshot": str(snapshot)})
        except BaseException:
            snapshot.unlink(missing_ok=True)
            raise
        return snapshot

    def attach(self, ident: str, run_id: str, category: str) -> None:
        """Write (or extend) the record of *ident*, attached to *run_id* in *category*.

        NotFound when the sender could not map *run_id* (no such run in the cache).
        """
        if not run_is_known(self.cache, run_id):
            raise NotFound(f"no run {run_id} in the offline cache {self.cache}", status=404)
        draft_path = self.drafts / f"{check_id(ident, 'artifact')}.json"
        earlier = self._created(ident)
        if draft_path.exists():
            draft = self._draft(ident)
            if draft["snapshot"] is None:
                raise ProtocolError(f"artifact {ident} has no content yet")
            runs = dict(earlier["runs"]) if earlier else {}
            record = file_record(draft, runs)
        elif earlier is not None:
            if not (self.artifacts / f"{ident}.json").exists():
                return  # already attached and sent by the sender
            record = earlier
        else:
            raise NotFound(f"no artifact {ident} created by this mount", status=404)
        record["runs"][run_id] = category
        data = record_bytes(record)
        write_atomically(self.artifacts / f"{ident}.json", data, temp=self._temp(ident, "record"))
        write_atomically(self.created / f"{ident}.json", data, temp=self._temp(ident, "created"))
        draft_path.unlink(missing_ok=True)

    def artifact(self, ident: str) -> Artifact:
        """Return artifact *ident* as its record in ``artifacts/`` describes it."""
        path = self.artifacts / f"{check_id(ident, 'artifact')}.json"
        try:
            data = json.loads(path.read_bytes())
            return self._parse(ident, data, path.stat()).artifact
        except FileNotFoundError:
            raise NotFound(f"no artifact {ident} in the offline cache", status=404) from None
        except ValueError as exc:
            raise ProtocolError(f"{path}: {exc}") from None

    def delete(self, ident: str) -> None:
        """Remove artifact *ident*, its record and its snapshot, if this mount created it.

        NotFound when the sender has sent it meanwhile; AuthError (403) when this mount did
        not create it (it is left alone).
        """
        earlier = self._created(ident)
        draft_path = self.drafts / f"{check_id(ident, 'artifact')}.json"
        state = earlier or (self._read(draft_path) if draft_path.exists() else None)
        if state is None:
            raise AuthError(f"artifact {ident} was not created by this mount", status=403)
        record_path = self.artifacts / f"{ident}.json"
        sent = earlier is not None and not record_path.exists()
        record_path.unlink(missing_ok=True)
        snapshot = state.get("file_path") or state.get("snapshot")
        if isinstance(snapshot, str) and Path(snapshot).parent == self.artifacts:
            Path(snapshot).unlink(missing_ok=True)
        draft_path.unlink(missing_ok=True)
        (self.created / f"{ident}.json").unlink(missing_ok=True)
        fsync_dir(self.artifacts)
        if sent:
            raise NotFound(f"artifact {ident} was sent by the sender already", status=404)

    # -- helpers ----------------------------------------------------------------------------

    def _temp(self, ident: str, what: str) -> Path:
        return self.drafts / f"{ident}.{what}{TEMP_SUFFIX}"

    def _save_draft(self, ident: str, draft: dict[str, Any]) -> None:
        path = self.drafts / f"{ident}.json"
        write_atomically(path, json.dumps(draft).encode("utf-8"), temp=self._temp(ident, "draft"))

    def _draft(self, ident: str) -> dict[str, Any]:
        path = self.drafts / f"{check_id(ident, 'artifact')}.json"
        if not path.exists():
            raise NotFound(f"no draft of artifact {ident} in {self.drafts}", status=404)
        draft = self._read(path)
        for key in ("name", "size", "mime_type", "checksum", "metadata", "snapshot"):
            if key not in draft:
                raise ProtocolError(f"{path}: no {key!r}")
        return draft

    def _created(self, ident: str) -> dict[str, Any] | None:
        path = self.created / f"{check_id(ident, 'artifact')}.json"
        if not path.exists():
            return None
        record = self._read(path)
        if not isinstance(record.get("runs"), dict):
            raise ProtocolError(f"{path}: no 'runs' mapping")
        return record

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ProtocolError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"{path}: not a JSON object")
        return data

    def _reserve_snapshot(self, name: str) -> Path:
        """Create an empty, unused snapshot file for the artifact *name*; return its path.

        ``<stem of name>_<UTC time to the ms>.file``; a name already taken moves on to the
        next millisecond (the client would overwrite it).
        """
        stem = PurePosixPath(name).stem or "file"
        when = datetime.now(UTC)
        while True:
            path = self.artifacts / snapshot_name(stem, when)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                when += timedelta(milliseconds=1)
                continue
            return path

    @staticmethod
    def _fill(source: Path, snapshot: Path, size: int, checksum: str, temp: Path) -> None:
        """Put the *size* bytes of *source* at *snapshot* through *temp*, durably.

        Hard-links when it can (spooled content never changes once committed), else copies,
        checking size and sha256 on the way (IntegrityError on a mismatch).
        """
        temp.unlink(missing_ok=True)
        try:
            os.link(source, temp)
        except OSError:
            _copy_checked(source, temp, size, checksum)
        else:
            linked = temp.stat().st_size
            if linked != size:
                temp.unlink()
                raise IntegrityError(f"{source} holds {linked} bytes, not {size}")
        os.replace(temp, snapshot)
        fsync_dir(snapshot.parent)


def _copy_checked(source: Path, target: Path, size: int, checksum: str) -> None:
    try:
        digest = copy_hashed(source, target)
        copied = target.stat().st_size
        if copied != size or digest != checksum:
            raise IntegrityError(f"{source} changed: {copied} bytes, sha256 {digest}")
    except BaseException:
        target.unlink(missing_ok=True)
        raise

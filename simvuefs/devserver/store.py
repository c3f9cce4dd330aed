"""Persistent state of the devserver: SQLite metadata plus content-addressed blobs.

Layout of the data directory:

- ``simvue.db``: SQLite in WAL mode. Folders, runs and artifacts are JSON documents (the
  fields the API returns, minus ``id``) with the columns used for filtering and sorting
  copied next to them; ``run_artifacts`` is the many-to-many relation with the category of
  each (run, artifact) pair.
- ``blobs/<sha256>``: artifact content, shared by every artifact with that checksum. A blob
  file only ever appears complete: uploads are written to ``blobs/tmp/`` and renamed.
- ``users``: the tenant of each user named when a token was minted for it; a user not in
  the table belongs to :data:`DEFAULT_TENANT`.

Who sees a run (:meth:`Store.query_runs`, :meth:`Store.visible_run`): its owner (the run's
``user``; a run without one is :data:`DEFAULT_USER`'s), everyone when its ``visibility``
says ``public``, the owner's tenant when it says ``tenant``, and the users its
``visibility.users`` names. One SQL condition (``_VISIBLE``) decides it for both.

All methods are synchronous and quick (local SQLite); the connection belongs to the thread
that runs the event loop. Timestamps are ``simvuefs.models.format_timestamp`` strings.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import string
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from simvuefs.devserver.filters import SORT_COLUMNS, compile_filters, compile_sorting
from simvuefs.models import format_timestamp

_SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
    id TEXT PRIMARY KEY, path TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    folder TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL, modified TEXT NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_name ON runs (name);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
CREATE TABLE IF NOT EXISTS artifacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    checksum TEXT NOT NULL, created TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_artifacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, artifact_id TEXT NOT NULL,
    category TEXT NOT NULL, UNIQUE (run_id, artifact_id));
CREATE INDEX IF NOT EXISTS run_artifacts_artifact ON run_artifacts (artifact_id);
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, tenant TEXT NOT NULL);
"""

DEFAULT_USER = "devserver"
"""The user of the tokens ``--write-config`` writes, and the owner of seeded runs."""
DEFAULT_TENANT = "devserver"
"""The tenant of every user not given another one (``POST /admin/tokens``)."""

_OWNER = (
    "(CASE json_type(runs.doc, '$.user') WHEN 'text' THEN json_extract(runs.doc, '$.user')"
    f" ELSE '{DEFAULT_USER}' END)"
)
"""The owner of a run, as :func:`run_owner` says."""
_VISIBLE = (
    f"({_OWNER} = ?"
    " OR json_extract(runs.doc, '$.visibility.public') = 1"
    " OR (json_extract(runs.doc, '$.visibility.tenant') = 1"
    f"     AND coalesce((SELECT tenant FROM users WHERE name = {_OWNER}), '{DEFAULT_TENANT}')"
    f"         = coalesce((SELECT tenant FROM users WHERE name = ?), '{DEFAULT_TENANT}'))"
    " OR EXISTS (SELECT 1 FROM json_each(runs.doc, '$.visibility.users')"
    "            WHERE json_each.value = ?))"
)
"""True for the runs the user bound to each of its 3 ``?`` may see (the module docstring's
rule)."""

ID_LENGTH = 22
_ID_ALPHABET = string.ascii_letters + string.digits

ARTIFACT_SORT_COLUMNS = {"name": "artifacts.name", "created": "artifacts.created"}


def new_id() -> str:
    """Return a fresh object id: 22 random alphanumerics, like the real server's."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


def now_timestamp() -> str:
    """Return the current UTC time in the server's timestamp format."""
    return format_timestamp(datetime.now(UTC))


def run_owner(run: dict[str, Any]) -> str:
    """Return who owns the run record *run* (as ``_VISIBLE`` decides it)."""
    user = run.get("user")
    return user if isinstance(user, str) else DEFAULT_USER


def _record(object_id: str, doc: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(doc)
    record["id"] = object_id
    return record


class Store:
    """The devserver's database and blob directory (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.tmp_dir = self.blob_dir / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            data_dir / "simvue.db", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for leftover in self.tmp_dir.iterdir():  # uploads interrupted by a previous stop
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- folders -----------------------------------------------------------------------------

    def ensure_folder(self, path: str) -> tuple[dict[str, Any], bool]:
        """Return the folder at *path* and whether it was created now."""
        row = self._db.execute("SELECT id, doc FROM folders WHERE path = ?", (path,)).fetchone()
        if row is not None:
            return _record(row[0], row[1]), False
        folder_id = new_id()
        doc: dict[str, Any] = {
            "path": path,
            "name": path.rstrip("/").rsplit("/", 1)[-1],
            "description": None,
            "tags": [],
            "metadata": {},
            "ttl": None,
            "starred": False,
            "created": now_timestamp(),
        }
        self._db.execute(
            "INSERT INTO folders (id, path, doc) VALUES (?, ?, ?)",
            (folder_id, path, json.dumps(doc)),
        )
        return {**doc, "id": folder_id}, True

    def get_folder(self, folder_id: str) -> dict[str, Any] | None:
        """Return the folder with *folder_id*, or None."""
        row = self._db.execute("SELECT id, doc FROM folders WHERE id = ?", (folder_id,)).fetchone()
        return None if row is None else _record(row[0], row[1])

    def list_folders(self, path: str | None = None) -> list[dict[str, Any]]:
        """Return all folders (or the one at *path*), ordered by path."""
        sql = "SELECT id, doc FROM folders" + (" WHERE path = ?" if path else "")
        rows = self._db.execute(sql + " ORDER BY path", (path,) if path else ())
        return [_record(i, d) for i, d in rows]

    # -- users -------------------------------------------------------------------------------

    def set_tenant(self, user: str, tenant: str) -> None:
        """Make *user* a member of *tenant* (its only one)."""
        self._db.execute(
            "INSERT INTO users (name, tenant) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET tenant = excluded.tenant",
            (user, tenant),
        )

    def tenant_of(self, user: str) -> str:
        """Return the tenant of *user* (:data:`DEFAULT_TENANT` unless given another)."""
        row = self._db.execute("SELECT tenant FROM users WHERE name = ?", (user,)).fetchone()
        return DEFAULT_TENANT if row is None else str(row[0])

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, doc: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        """Store a new run from *doc* (which must have name, folder, status, created)."""
        run_id = run_id or new_id()
        doc = {**doc, "modified": doc.get("modified") or doc["created"]}
        self.ensure_folder(doc["folder"])
        self._db.execute(
            "INSERT INTO runs (id, name, folder, status, created, modified, doc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                doc["name"],
                doc["folder"],
                doc["status"],
                doc["created"],
                doc["modified"],
                json.dumps(doc),
            ),
        )
        return {**doc, "id": run_id}

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """Return the run with *run_id*, or None."""
        row = self._db.execute("SELECT id, doc FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _record(row[0], row[1])

    def update_run(self, run_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Merge *changes* into the run (a partial update); return it, or None if unknown."""
        run = self.get_run(run_id)
        if run is None:
            return None
        run.pop("id")
        run.update(changes)
        run["modified"] = now_timestamp()
        self.ensure_folder(run["folder"])
        self._db.execute(
            "UPDATE runs SET name = ?, folder = ?, status = ?, modified = ?, doc = ? WHERE id = ?",
            (run["name"], run["folder"], run["status"], run["modified"], json.dumps(run), run_id),
        )
        return {**run, "id": run_id}

    def delete_run(self, run_id: str) -> bool:
        """Delete the run and its artifact attachments; False if it did not exist."""
        with self._db:
            self._db.execute("BEGIN")
            deleted = self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount
            self._db.execute("DELETE FROM run_artifacts WHERE run_id = ?", (run_id,))
        return deleted > 0

    def visible_run(self, run_id: str, viewer: str) -> dict[str, Any] | None:
        """Return the run with *run_id* if the user *viewer* may see it, else None."""
        row = self._db.execute(
            f"SELECT id, doc FROM runs WHERE id = ? AND {_VISIBLE}", (run_id, *[viewer] * 3)
        ).fetchone()
        return None if row is None else _record(row[0], row[1])

    def query_runs(
        self,
        filters: Sequence[str],
        user: str,
        start: int,
        count: int,
        sorting: Sequence[object] = (),
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of the runs the user *user* may see that match *filters* (where
        ``user == self`` means *user*), and the total number of them.

        Raises ``filters.QueryError`` for filters or sort columns the server does not know.
        """
        rows, total = self._query_runs("id, doc", filters, user, start, count, sorting)
        return [_record(i, d) for i, d in rows], total

    def query_runs_json(
        self,
        filters: Sequence[str],
        user: str,
        start: int,
        count: int,
        sorting: Sequence[object] = (),
    ) -> tuple[list[str], int]:
        """:meth:`query_runs`, each run as the JSON text of its record (id included), as
        SQLite writes it: a page sent as stored, without decoding and encoding every run in
        Python (most of the CPU of a page of 100 runs)."""
        rows, total = self._query_runs(
            "json_set(doc, '$.id', id)", filters, user, start, count, sorting
        )
        return [text for (text,) in rows], total

    def _query_runs(
        self,
        columns: str,
        filters: Sequence[str],
        user: str,
        start: int,
        count: int,
        sorting: Sequence[object],
    ) -> tuple[list[tuple[str, ...]], int]:
        """The *columns* of one page of runs (:meth:`query_runs`), and the total."""
        where, params = compile_filters(filters, user)
        where, params = f"({where}) AND {_VISIBLE}", [*params, *[user] * 3]
        order = compile_sorting(sorting, SORT_COLUMNS)
        order = f"{order}, runs.seq" if order else "runs.created, runs.seq"
        total = self._db.execute(f"SELECT count(*) FROM runs WHERE {where}", params).fetchone()[0]
        rows = self._db.execute(
            f"SELECT {columns} FROM runs WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, count, start],
        ).fetchall()
        return rows, total

    def count_runs(self) -> int:
        """Return how many runs are stored."""
        count: int = self._db.execute("SELECT count(*) FROM runs").fetchone()[0]
        return count

    # -- artifacts ---------------------------------------------------------------------------

    def create_artifact(
        self, doc: dict[str, Any], artifact_id: str | None = None
    ) -> dict[str, Any]:
        """Store a new artifact record from *doc* (name, checksum, created, ...)."""
        artifact_id = artifact_id or new_id()
        self._db.execute(
            "INSERT INTO artifacts (id, name, checksum, created, doc) VALUES (?, ?, ?, ?, ?)",
            (artifact_id, doc["name"], doc["checksum"], doc["created"], json.dumps(doc)),
        )
        return {**doc, "id": artifact_id}

    def get_artifact(self, artifact_id: str) -> dict[str, Any] | None:
        """Return the artifact with *artifact_id*, or None."""
        row = self._db.execute(
            "SELECT id, doc FROM artifacts WHERE id = ?", (artifact_id,)
        ).fetchone()
        return None if row is None else _record(row[0], row[1])

    def update_artifact(self, artifact_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Merge *changes* into the artifact; return it, or None if unknown."""
        artifact = self.get_artifact(artifact_id)
        if artifact is None:
            return None
        artifact.pop("id")
        artifact.update(changes)
        self._db.execute(
            "UPDATE artifacts SET name = ?, checksum = ?, doc = ? WHERE id = ?",
            (artifact["name"], artifact["checksum"], json.dumps(artifact), artifact_id),
        )
        return {**artifact, "id": artifact_id}

    def delete_artifact(self, artifact_id: str) -> bool:
        """Delete the artifact and its attachments (its blob stays); False if unknown."""
        with self._db:
            self._db.execute("BEGIN")
            deleted = self._db.execute(
                "DELETE FROM artifacts WHERE id = ?", (artifact_id,)
            ).rowcount
            self._db.execute("DELETE FROM run_artifacts WHERE artifact_id = ?", (artifact_id,))
        return deleted > 0

    def attach(self, run_id: str, artifact_id: str, category: str) -> None:
        """Attach the artifact to the run in *category* (replacing an earlier category)."""
        self._db.execute(
            "INSERT INTO run_artifacts (run_id, artifact_id, category) VALUES (?, ?, ?)"
            " ON CONFLICT (run_id, artifact_id) DO UPDATE SET category = excluded.category",
            (run_id, artifact_id, category),
        )

    def category_of(self, run_id: str, artifact_id: str) -> str | None:
        """Return the artifact's category in the run, or None if it is not attached."""
        row = self._db.execute(
            "SELECT category FROM run_artifacts WHERE run_id = ? AND artifact_id = ?",
            (run_id, artifact_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def run_artifacts(
        self, run_id: str, category: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """Return the run's artifacts (each with its ``category``), in attachment order."""
        sql = (
            "SELECT a.id, a.doc, ra.category FROM run_artifacts ra"
            " JOIN artifacts a ON a.id = ra.artifact_id WHERE ra.run_id = ?"
        )
        params: list[object] = [run_id]
        if category is not None:
            sql += " AND ra.category = ?"
            params.append(category)
        if name is not None:
            sql += " AND a.name = ?"
            params.append(name)
        rows = self._db.execute(sql + " ORDER BY ra.seq", params)
        return [{**_record(i, d), "category": c} for i, d, c in rows]

    def query_artifacts(
        self, run_ids: Sequence[str] | None, start: int, count: int, sorting: Sequence[object] = ()
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of artifacts (attached to any of *run_ids*, or all) and the total."""
        where, params = "1", []
        if run_ids is not None:
            marks = ", ".join("?" * len(run_ids))
            where = (
                f"artifacts.id IN (SELECT artifact_id FROM run_artifacts WHERE run_id IN ({marks}))"
            )
            params = list(run_ids)
        order = compile_sorting(sorting, ARTIFACT_SORT_COLUMNS)
        order = f"{order}, artifacts.seq" if order else "artifacts.seq"
        total = self._db.execute(
            f"SELECT count(*) FROM artifacts WHERE {where}", params
        ).fetchone()[0]
        rows = self._db.execute(
            f"SELECT id, doc FROM artifacts WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, count, start],
        )
        return [_record(i, d) for i, d in rows], total

    # -- blobs -------------------------------------------------------------------------------

    def blob_path(self, checksum: str) -> Path:
        """Return where the content with *checksum* is (or would be) stored."""
        return self.blob_dir / checksum

    def has_blob(self, checksum: str) -> bool:
        """True when content with *checksum* is stored."""
        return self.blob_path(checksum).is_file()

    def open_spool(self) -> tuple[IO[bytes], Path]:
        """Return a new temporary file for incoming content, and its path."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        return os.fdopen(fd, "wb"), Path(name)

    def commit_blob(self, spool: Path, checksum: str) -> None:
        """Move the verified temporary file *spool* into place as the blob for *checksum*."""
        os.replace(spool, self.blob_path(checksum))

    def write_blob(self, checksum: str, chunks: Iterable[bytes]) -> None:
        """Store content given as *chunks* whose sha256 the caller has computed."""
        spool_file, spool = self.open_spool()
        with spool_file:
            for chunk in chunks:
                spool_file.write(chunk)
        self.commit_blob(spool, checksum)

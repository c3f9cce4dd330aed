"""Deleting artifacts of a run: those a landed file replaced, and those ``rm`` removes, only
when that is safe.

A file renamed after it was attached lands again under its new name, and the artifact under
the old name is then deleted; a file that overwrote an input of a run being prepared
(``created``) replaces it the same way; ``rm`` of an input deletes it at once
(:func:`delete_now`). Each delete is (``DELETE /api/artifacts/{id}``, the official client's
``FileArtifact.delete``). What a delete does on the real server to an artifact attached to
several runs, or to content other artifacts share, is not documented, so every delete is
guarded:

- Candidates: artifacts this mount created (an earlier name of a file written here, only if
  the server's record of it has the name it was created with: ``upload.py``), and inputs of
  a run the user changes while the run is ``created`` (``fuse/tree.py`` decides which).
- Before each DELETE (:func:`delete_problem`) the server is asked: the artifact must still
  hold the checksum it had when it was replaced (``JournalRecord.expected_checksum``),
  must not be the artifact just landed (a server that gave the new name the same one), and
  must be attached to no run but this one (``artifact_runs``, the official client's
  ``artifact.id ==`` runs filter). :func:`sharing_problem` asks the last question before a
  change starts, so that an input shared with another run is refused at ``open``,
  ``rename`` or ``unlink`` (the caller's errno), not replaced half-way.
- Every delete is noted in the spool's change log (``changes.py``) and logged.
- ``settings.delete_artifacts`` off (``--no-delete``): never a DELETE (and ``upload.py``
  refuses such renames with EXDEV, so none is journaled).

An artifact that fails a check, or whose DELETE the server refuses (400/403/405/501), is
kept with a warning: both names stay in the run. Residual risks: runs the user cannot see
are not listed by the server; and a server that deduplicates content by checksum might,
on a delete, remove content that other artifacts (this file's new one included) share.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import trio

from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import Settings
from simvuefs.errors import LocalError, NotFound, StatusError
from simvuefs.models import Artifact
from simvuefs.write import changes
from simvuefs.write.refusal import final_errno
from simvuefs.write.spool import JournalRecord

log = logging.getLogger(__name__)

REFUSED_STATUSES = (400, 403, 405, 501)
"""Statuses of a DELETE that retrying will not change: the old name stays, with a warning."""


async def delete_replaced(
    client: SimvueBackend,
    settings: Settings,
    artifact_id: str,
    record: JournalRecord,
    spool_root: Path,
) -> None:
    """Delete *artifact_id*, which the landed *record*'s file replaced (an earlier name of
    it, or an input it overwrote), if that is safe (module docstring); note it in the change
    log of the spool at *spool_root*. Raises the client's errors worth a retry."""
    try:
        if artifact_id == record.artifact_id:
            problem: str | None = "the server gave the new name the same artifact"
        else:
            problem = await delete_problem(
                client, settings, artifact_id, record.run_id, record.expected_checksum(artifact_id)
            )
    except StatusError as exc:
        if final_errno(exc) is None:
            raise
        problem = f"the server refused to say whether it is safe (status {exc.status})"
    if problem is None:
        try:
            await client.delete_artifact(artifact_id)
        except NotFound:
            return
        except StatusError as exc:
            if exc.status not in REFUSED_STATUSES and final_errno(exc) is None:
                raise
            problem = f"the server refused to delete it (status {exc.status})"
        else:
            overwritten = record.expected_checksum(artifact_id) != record.checksum
            what = "the content it overwrote" if overwritten else "its earlier name"
            await trio.to_thread.run_sync(
                changes.note,
                spool_root,
                "replaced" if overwritten else "renamed",
                record.run_id,
                f"{record.category}/{record.name}",
                artifact_id,
                f"deleted {what}; the run now has artifact {record.artifact_id}",
            )
            return
    if problem:
        log.warning(
            "run %s: artifact %s, replaced by %s, is not deleted: %s; both stay",
            record.run_id,
            artifact_id,
            record.name,
            problem,
        )


async def delete_now(
    client: SimvueBackend,
    settings: Settings,
    run_id: str,
    name: str,
    artifact: Artifact,
    spool_root: Path,
) -> None:
    """Delete the artifact *artifact*, shown as *name* (``input/a.txt``) in run *run_id*
    (``rm``), within ``request_timeout`` per request, if that is safe (module docstring).

    Raises LocalError(EPERM) saying why when it is not (it stays, and a warning says why);
    the client's errors (EIO, ETIMEDOUT) when the server cannot be asked.
    """
    problem = await delete_problem(client, settings, artifact.id, run_id, artifact.checksum)
    if problem is None:
        try:
            await client.delete_artifact(artifact.id)
        except NotFound:
            problem = ""
        except StatusError as exc:
            if exc.status not in REFUSED_STATUSES and final_errno(exc) is None:
                raise
            problem = f"the server refused to delete it (status {exc.status})"
        else:
            await trio.to_thread.run_sync(
                changes.note, spool_root, "deleted", run_id, name, artifact.id, ""
            )
            return
    if problem:
        log.warning("run %s: not deleting %s (artifact %s): %s", run_id, name, artifact.id, problem)
        raise LocalError(f"{name} is not deleted: {problem}", errno=errno.EPERM)


async def delete_problem(
    client: SimvueBackend, settings: Settings, artifact_id: str, run_id: str, checksum: str
) -> str | None:
    """Why deleting *artifact_id* from run *run_id* is not safe: None when it is, "" when it
    is gone already. It must still hold *checksum* and belong to no other run."""
    if not settings.delete_artifacts:
        return "deletes are off (--no-delete)"
    try:
        artifact = await client.get_artifact(artifact_id)
    except NotFound:
        return ""
    if artifact.checksum != checksum:
        return "the server's record of it does not hold the checksum it had here"
    return await sharing_problem(client, settings, artifact_id, run_id)


async def sharing_problem(
    client: SimvueBackend, settings: Settings, artifact_id: str, run_id: str
) -> str | None:
    """Why the artifact *artifact_id* of run *run_id* cannot be replaced or deleted (deletes
    are off, or it is attached to other runs too), or None."""
    if not settings.delete_artifacts:
        return "deletes are off (--no-delete)"
    others = sorted(set(await client.artifact_runs(artifact_id)) - {run_id})
    if others:
        return f"it is attached to other runs too ({', '.join(others[:3])})"
    return None

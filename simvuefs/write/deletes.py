"""Deleting the artifacts that a rename replaced, only when that is safe.

A file renamed after it was attached lands again under its new name, and the artifact under
the old name is then deleted (``DELETE /api/artifacts/{id}``, the official client's
``FileArtifact.delete``). What a delete does on the real server to an artifact attached to
several runs, or to content other artifacts share, is not documented, so every delete is
guarded:

- Only artifacts this mount created are ever candidates: ``record.replaces`` holds the
  artifact of a file written here, and only if the server's record of it has the name it
  was created with (``upload.py``: a server that answered the create with an artifact it
  already had is left alone).
- Before each DELETE (:func:`delete_problem`) the server is asked: the artifact must still
  hold this file's checksum, must not be the artifact just landed (a server that gave the
  new name the same one), and must be attached to no run but this one (``artifact_runs``,
  the official client's ``artifact.id ==`` runs filter).
- ``settings.delete_artifacts`` off (``--no-delete``): never a DELETE (and ``upload.py``
  refuses such renames with EXDEV, so none is journaled).

An artifact that fails a check, or whose DELETE the server refuses (400/403/405/501), is
kept with a warning: both names stay in the run. Residual risks: runs the user cannot see
are not listed by the server; and a server that deduplicates content by checksum might,
on a delete, remove content that other artifacts (this file's new one included) share.
"""

from __future__ import annotations

import logging

from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import Settings
from simvuefs.errors import NotFound, StatusError
from simvuefs.write.refusal import final_errno
from simvuefs.write.spool import JournalRecord

log = logging.getLogger(__name__)

REFUSED_STATUSES = (400, 403, 405, 501)
"""Statuses of a DELETE that retrying will not change: the old name stays, with a warning."""


async def delete_replaced(
    client: SimvueBackend, settings: Settings, artifact_id: str, record: JournalRecord
) -> None:
    """Delete *artifact_id*, which showed the landed *record*'s file under an earlier name,
    if that is safe (module docstring). Raises the client's errors worth a retry."""
    try:
        problem = await delete_problem(client, settings, artifact_id, record)
    except StatusError as exc:
        if final_errno(exc) is None:
            raise
        problem = f"the server refused to say whether it is safe (status {exc.status})"
    if problem is None:
        try:
            await client.delete_artifact(artifact_id)
            return
        except NotFound:
            return
        except StatusError as exc:
            if exc.status not in REFUSED_STATUSES and final_errno(exc) is None:
                raise
            problem = f"the server refused to delete it (status {exc.status})"
    if problem:
        log.warning(
            "run %s: artifact %s, the earlier name of %s, is not deleted: %s; both names stay",
            record.run_id,
            artifact_id,
            record.name,
            problem,
        )


async def delete_problem(
    client: SimvueBackend, settings: Settings, artifact_id: str, record: JournalRecord
) -> str | None:
    """Why deleting *artifact_id* (replaced by the landed *record*) is not safe: None when
    it is, "" when it is gone already."""
    if not settings.delete_artifacts:
        return "deletes are off (--no-delete)"
    if artifact_id == record.artifact_id:
        return "the server gave the new name the same artifact"
    try:
        artifact = await client.get_artifact(artifact_id)
    except NotFound:
        return ""
    if artifact.checksum != record.checksum:
        return "the server's record of it does not hold this file's checksum"
    others = sorted(set(await client.artifact_runs(artifact_id)) - {record.run_id})
    if others:
        return f"it is attached to other runs too ({', '.join(others[:3])})"
    return None

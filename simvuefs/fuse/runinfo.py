"""``runs/<run>/.simvue-run.json``: a run's record as a small read-only JSON file.

Pure: no I/O. The document is made from the :class:`~simvuefs.models.Run` the tree last
listed, so it is as fresh as the runs listing (the metadata TTL). Invariants: the same run
record always gives the same bytes (keys in a fixed order, metadata keys sorted, two-space
indent, a trailing newline), so the size reported by ``stat`` is exactly what ``read``
returns; times are ISO 8601 in UTC with a ``Z`` (null when the server has none).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from simvuefs.models import Run

RUN_INFO_NAME = ".simvue-run.json"
"""The file's name in every run directory (a dot file: ``ls`` hides it, ``cp -r`` copies it)."""


def _time(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_fields(run: Run) -> dict[str, object]:
    """The run's fields in document order (metadata as the server sent it)."""
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "folder": run.folder,
        "tags": list(run.tags),
        "description": run.description,
        "created": _time(run.created),
        "started": _time(run.started),
        "endtime": _time(run.endtime),
        "metadata": run.metadata,
    }


def run_document(run: Run) -> bytes:
    """Return the content of ``.simvue-run.json`` for *run* (UTF-8 JSON, newline at the end).

    Metadata values JSON cannot hold as they are (never the case for what a server sent as
    JSON) are written as strings.
    """
    fields = run_fields(run)
    fields["metadata"] = json.loads(json.dumps(run.metadata, sort_keys=True, default=str))
    text = json.dumps(fields, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    return text.encode("utf-8") + b"\n"

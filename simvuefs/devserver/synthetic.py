"""Synthetic runs and artifacts for the huge-listing faults (``extra_runs``,
``extra_artifacts``).

They exist only while the switch is on and are never stored: records are computed from
their index, so a listing of 100 000 runs costs no database space. Ids are 22 characters
like real ones, with a prefix no random id of the store is likely to have.

- Synthetic runs follow the real ones in ``GET /api/runs`` when no filter is given (the
  ``count`` includes them; sorting applies to the real ones only), and answer
  ``GET /api/runs/{id}``.
- Synthetic artifacts are empty (the content of every one is ``b""``) and are attached to
  every run, real or synthetic, in category ``output``, after the run's real artifacts.
  ``GET /api/artifacts/{id}`` and storage downloads know them; ``GET /api/artifacts`` does
  not list them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from simvuefs.devserver.state import USER_NAME

RUN_PREFIX = "synthrun"
ARTIFACT_PREFIX = "synthart"
_DIGITS = 14  # prefix + digits = 22 characters, like the store's ids
CATEGORY = "output"
CREATED = "2025-01-01T00:00:00.000000"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def run_id(index: int) -> str:
    """Return the id of synthetic run *index* (0-based)."""
    return f"{RUN_PREFIX}{index:0{_DIGITS}d}"


def artifact_id(index: int) -> str:
    """Return the id of synthetic artifact *index* (0-based)."""
    return f"{ARTIFACT_PREFIX}{index:0{_DIGITS}d}"


def _index(object_id: str, prefix: str, count: int) -> int | None:
    digits = object_id.removeprefix(prefix)
    if digits == object_id or len(digits) != _DIGITS or not digits.isdigit():
        return None
    index = int(digits)
    return index if index < count else None


def run(object_id: str, count: int) -> dict[str, Any] | None:
    """Return the synthetic run with *object_id* while *count* of them exist, or None."""
    index = _index(object_id, RUN_PREFIX, count)
    return None if index is None else run_record(index)


def artifact(object_id: str, count: int) -> dict[str, Any] | None:
    """Return the synthetic artifact with *object_id* (without url) while *count* exist."""
    index = _index(object_id, ARTIFACT_PREFIX, count)
    return None if index is None else artifact_record(index)


def run_record(index: int) -> dict[str, Any]:
    """Return synthetic run *index* as the API shows runs."""
    return {
        "id": run_id(index),
        "name": f"synthetic-{index:06d}",
        "folder": "/",
        "status": "completed",
        "description": None,
        "tags": [],
        "metadata": {},
        "system": {},
        "created": CREATED,
        "started": CREATED,
        "endtime": CREATED,
        "modified": CREATED,
        "user": USER_NAME,
    }


def artifact_record(index: int) -> dict[str, Any]:
    """Return synthetic artifact *index* as the store holds artifacts (no url)."""
    return {
        "id": artifact_id(index),
        "name": f"synthetic-{index:06d}.dat",
        "original_path": f"/synthetic/synthetic-{index:06d}.dat",
        "size": 0,
        "mime_type": "application/octet-stream",
        "checksum": EMPTY_SHA256,
        "metadata": None,
        "uploaded": True,
        "created": CREATED,
        "storage_id": "devserver",
        "user": USER_NAME,
    }


def runs_page(count: int, start: int, length: int) -> list[dict[str, Any]]:
    """Return synthetic runs *start* .. *start* + *length* (clipped to *count*)."""
    return [run_record(i) for i in range(max(0, start), min(count, start + length))]


def run_artifacts(count: int, category: str | None, name: str | None) -> list[dict[str, Any]]:
    """Return the synthetic artifacts every run has, filtered like the real listing."""
    if count <= 0 or category not in (None, CATEGORY):
        return []
    records = (artifact_record(i) for i in range(count))
    return [
        {**record, "category": CATEGORY}
        for record in records
        if name is None or record["name"] == name
    ]

"""Run and Artifact records for tests of the naming rules and the tree (no server).

Times are minutes after :data:`T0`, so a test says which record is newer with small numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from simvuefs.models import Artifact, Run

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def run(run_id: str, name: str, minutes: int | None = 0, status: str = "running") -> Run:
    """A run created *minutes* after T0 (None: no created time)."""
    created = None if minutes is None else T0 + timedelta(minutes=minutes)
    return Run(id=run_id, name=name, created=created, status=status)


def art(
    artifact_id: str, name: str, minutes: int = 0, size: int = 10, original_path: str = "/x"
) -> Artifact:
    """A file artifact (an object artifact with ``original_path=""``) created *minutes*
    after T0."""
    return Artifact(
        id=artifact_id,
        name=name,
        size=size,
        original_path=original_path,
        created=T0 + timedelta(minutes=minutes),
    )

"""Build devserver data directories with many runs and artifacts, fast, for listing tests.

Writes straight into :class:`simvuefs.devserver.store.Store` (as ``seed.py`` does) before the
devserver starts: thousands of artifacts in seconds, where uploading them would take minutes.
Every artifact has its own small content (``run <i> <name>``), so names, sizes and checksums
all differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import sha256

from simvuefs.devserver.seed import artifact_record, run_record
from simvuefs.devserver.store import Store
from simvuefs.models import CATEGORIES

BASE_TIME = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
BIG_RUN = "big-run"
"""The run whose ``output/`` holds the big directory."""


@dataclass(frozen=True)
class Layout:
    """What :func:`fill` made: ``runs`` runs ``run-0000``... with ``per_run`` artifacts each
    (spread over the categories), and, when ``big`` > 0, the run :data:`BIG_RUN` with
    ``big`` artifacts in ``output/``."""

    runs: int
    per_run: int
    big: int

    @property
    def run_count(self) -> int:
        return self.runs + (1 if self.big else 0)

    @property
    def artifact_count(self) -> int:
        return self.runs * self.per_run + self.big


def run_name(index: int) -> str:
    return f"run-{index:04d}"


def fill(data_dir: Path, layout: Layout) -> Layout:
    """Fill the (new) devserver data directory *data_dir* with *layout*; return it."""
    store = Store(data_dir)
    try:
        runs = [(run_name(i), layout.per_run) for i in range(layout.runs)]
        if layout.big:
            runs.append((BIG_RUN, layout.big))
        for index, (name, count) in enumerate(runs):
            created = BASE_TIME + timedelta(minutes=index)
            run = store.create_run(
                run_record(
                    name,
                    "/listing",
                    "completed",
                    created,
                    started=created,
                    ended=created + timedelta(seconds=30),
                )
            )
            for number in range(count):
                category = "output" if name == BIG_RUN else CATEGORIES[number % len(CATEGORIES)]
                artifact = _artifact(store, name, f"file-{number:04d}.dat", created)
                store.attach(run["id"], artifact, category)
    finally:
        store.close()
    return layout


def _artifact(store: Store, run: str, name: str, created: datetime) -> str:
    content = f"run {run} {name}\n".encode()
    checksum = sha256(content)
    store.write_blob(checksum, [content])
    record = store.create_artifact(
        artifact_record(
            name,
            f"/home/listing/{name}",
            len(content),
            checksum,
            created,
            "application/octet-stream",
        )
    )
    return str(record["id"])

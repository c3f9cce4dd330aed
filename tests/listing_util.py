"""Build devserver data directories with many runs and artifacts, fast, for listing tests.

Writes straight into :class:`simvuefs.devserver.store.Store` (as ``seed.py`` does) before the
devserver starts: thousands of artifacts in seconds, where uploading them would take minutes.
Every artifact has its own small content (``run <i> <name>``), so names, sizes and checksums
all differ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simvuefs.devserver.state import USER_NAME
from simvuefs.devserver.store import Store
from simvuefs.models import CATEGORIES, format_timestamp

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
            run = store.create_run(_run_doc(name, created))
            for number in range(count):
                category = "output" if name == BIG_RUN else CATEGORIES[number % len(CATEGORIES)]
                artifact = _artifact(store, name, f"file-{number:04d}.dat", created)
                store.attach(run["id"], artifact, category)
    finally:
        store.close()
    return layout


def _run_doc(name: str, created: datetime) -> dict[str, object]:
    stamp = format_timestamp(created)
    return {
        "name": name,
        "folder": "/listing",
        "status": "completed",
        "tags": [],
        "description": None,
        "metadata": {},
        "system": {},
        "user": USER_NAME,
        "created": stamp,
        "started": stamp,
        "endtime": format_timestamp(created + timedelta(seconds=30)),
        "modified": stamp,
        "heartbeat_timeout": 180,
        "ttl": None,
        "starred": False,
        "alerts": [],
        "notifications": {"state": "none"},
        "visibility": {"tenant": False, "public": False, "users": []},
    }


def _artifact(store: Store, run: str, name: str, created: datetime) -> str:
    content = f"run {run} {name}\n".encode()
    checksum = hashlib.sha256(content).hexdigest()
    store.write_blob(checksum, [content])
    record = store.create_artifact(
        {
            "name": name,
            "original_path": f"/home/listing/{name}",
            "size": len(content),
            "mime_type": "application/octet-stream",
            "checksum": checksum,
            "metadata": None,
            "uploaded": True,
            "created": format_timestamp(created),
            "storage_id": "devserver",
            "user": USER_NAME,
        }
    )
    return str(record["id"])

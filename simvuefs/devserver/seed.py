"""Demo data for ``--seed demo``: runs, folders and artifacts covering the hard cases.

Everything seeded is described by :data:`ARTIFACTS` and :data:`RUNS`, so tests can import
the expected names, categories and content. The cases covered: run names with spaces,
``:``, ``.`` and ``/``; two runs with the same name; artifact names with ``/``; one artifact
attached to two runs; equal content in separate artifacts; an empty file; object artifacts
stored the way ``Run.save_object`` stores them (``original_path == ""``, ``size`` = content
length + 33); and a large generated artifact whose content :func:`large_content` recomputes
for any byte range.

``--seed multiuser`` adds :data:`OTHER_USERS`, their :data:`SHARED_ARTIFACTS` and
:data:`SHARED_RUNS` to the demo: three runs of other users the default user sees (shared
with it by name, with its tenant, with everyone) and two it must not see (another user's
private run; a tenant run of a user in another tenant).

Seeding writes straight into the store (not through HTTP) and only into an empty store.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from simvuefs.devserver.state import USER_NAME
from simvuefs.devserver.store import DEFAULT_TENANT, Store
from simvuefs.models import format_timestamp

OBJECT_SIZE_OVERHEAD = 33
"""The official client reports ``sys.getsizeof(bytes)`` as an object artifact's size."""

LARGE_BLOCK = 1024 * 1024
_LARGE_BASE = random.Random(20250314).randbytes(LARGE_BLOCK)
_LARGE_STRIDE = 1_000_003  # prime: every block index gets its own rotation of the base block

BASE_TIME = datetime(2025, 3, 14, 9, 0, 0, 125000, tzinfo=UTC)


def large_block(index: int) -> bytes:
    """Return block *index* (LARGE_BLOCK bytes) of the large artifact: a rotation of one
    pseudo-random block, different for every index, so misplaced bytes are detectable."""
    shift = (index * _LARGE_STRIDE) % LARGE_BLOCK
    return _LARGE_BASE[shift:] + _LARGE_BASE[:shift]


def large_content(offset: int, length: int) -> bytes:
    """Return bytes [offset, offset + length) of the large artifact (of any size)."""
    parts = []
    end = offset + length
    while offset < end:
        index, inner = divmod(offset, LARGE_BLOCK)
        take = min(LARGE_BLOCK - inner, end - offset)
        parts.append(large_block(index)[inner : inner + take])
        offset += take
    return b"".join(parts)


def _large_chunks(size: int) -> Iterator[bytes]:
    full, rest = divmod(size, LARGE_BLOCK)
    for index in range(full):
        yield large_block(index)
    if rest:
        yield large_block(full)[:rest]


def _npy(values: list[float]) -> bytes:
    """Serialise a 1-d float64 array in NumPy's .npy format (what save_object sends)."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({len(values)},), }}"
    padding = 64 - (10 + len(header) + 1) % 64
    header_bytes = (header + " " * padding + "\n").encode("latin-1")
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", len(header_bytes))
        + header_bytes
        + struct.pack(f"<{len(values)}d", *values)
    )


def _mesh_text() -> bytes:
    lines = ["FoamFile { class pointField; object points; }", str(400), "("]
    lines += [f"({i % 20 * 0.05:.3f} {i // 20 * 0.05:.3f} 0.000)" for i in range(400)]
    lines.append(")")
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class SeedArtifact:
    """One artifact record. ``content`` None means the large generated content."""

    name: str
    content: bytes | None
    original_path: str
    mime_type: str = ""

    @property
    def is_object(self) -> bool:
        return self.original_path == ""

    @property
    def mime(self) -> str:
        return self.mime_type or mimetypes.guess_type(self.name)[0] or "application/octet-stream"


@dataclass(frozen=True)
class SeedRun:
    """One run; ``artifacts`` pairs keys of ARTIFACTS with the category in this run."""

    name: str
    folder: str
    status: str
    tags: tuple[str, ...]
    created: datetime
    duration: timedelta | None
    artifacts: tuple[tuple[str, str], ...]
    description: str = ""
    user: str = USER_NAME
    visibility: tuple[str, ...] = ()
    """``public``, ``tenant`` and user names: who else sees the run (private when empty)."""

    def visibility_record(self) -> dict[str, object]:
        """The run's ``visibility`` as the server stores it."""
        names = [v for v in self.visibility if v not in ("public", "tenant")]
        return {
            "public": "public" in self.visibility,
            "tenant": "tenant" in self.visibility,
            "users": names,
        }


ARTIFACTS: dict[str, SeedArtifact] = {
    "notes": SeedArtifact("notes.txt", b"Demo run notes.\nSecond line.\n", "/home/demo/notes.txt"),
    "mesh": SeedArtifact("system/mesh.dat", _mesh_text(), "/home/demo/case/system/mesh.dat"),
    "solver": SeedArtifact(
        "src/solver.f90",
        b"program solver\n  implicit none\n  print *, 'converged'\nend program solver\n",
        "/home/demo/case/src/solver.f90",
    ),
    "results": SeedArtifact(
        "results.csv",
        b"step,residual,energy\n"
        + b"".join(f"{i},{1.0 / (i + 1):.6f},{100 - i * 0.5:.2f}\n".encode() for i in range(50)),
        "/home/demo/case/results.csv",
    ),
    "empty": SeedArtifact("empty.log", b"", "/home/demo/case/empty.log"),
    "summary": SeedArtifact(
        "summary",
        json.dumps({"converged": True, "iterations": 50}).encode(),
        "",
        "application/json",
    ),
    "spectrum": SeedArtifact(
        "spectrum", _npy([0.5, 1.5, 2.5, 3.5]), "", "application/vnd.simvue.numpy.v1"
    ),
    "large": SeedArtifact("large.bin", None, "/home/demo/case/large.bin"),
    "residuals": SeedArtifact(
        "residuals.csv", b"iteration,residual\n1,0.5\n2,0.25\n3,0.125\n", "/scratch/residuals.csv"
    ),
    "scan_params": SeedArtifact("scan params.txt", b"angle=45\nenergy=12keV\n", "/data/params.txt"),
    "scan_log": SeedArtifact(
        "scan.log", b"scan started\nERROR: detector timeout\n", "/data/scan.log"
    ),
    "release_script": SeedArtifact("run.py", b"print('release 1.2')\n", "/home/demo/run.py"),
    "sweep_a_params": SeedArtifact("params.json", b'{"alpha": 0.1}\n', "/sweep/params.json"),
    "sweep_a_result": SeedArtifact("result.txt", b"sweep A: 0.42\n", "/sweep/a/result.txt"),
    "sweep_b_params": SeedArtifact("params.json", b'{"alpha": 0.1}\n', "/sweep/params.json"),
    "sweep_b_result": SeedArtifact("result.txt", b"sweep B: 0.37\n", "/sweep/b/result.txt"),
}

_HOUR = timedelta(hours=1)
RUNS: tuple[SeedRun, ...] = (
    SeedRun(
        "demo run",
        "/demo",
        "completed",
        ("demo", "baseline"),
        BASE_TIME,
        2 * _HOUR,
        (
            ("notes", "input"),
            ("mesh", "input"),
            ("solver", "code"),
            ("results", "output"),
            ("empty", "output"),
            ("summary", "output"),
            ("spectrum", "output"),
            ("large", "output"),
        ),
        "Baseline demo with every kind of artifact",
    ),
    SeedRun(
        "cfd/mesh-study",
        "/demo/cfd",
        "running",
        ("cfd", "mesh"),
        BASE_TIME + 24 * _HOUR,
        None,
        (("mesh", "input"), ("solver", "code"), ("residuals", "output")),
    ),
    SeedRun(
        "scan:2025-03",
        "/scans",
        "failed",
        ("scan",),
        BASE_TIME + 48 * _HOUR,
        _HOUR / 4,
        (("scan_params", "input"), ("scan_log", "output")),
    ),
    SeedRun(
        "v1.2.release",
        "/demo",
        "completed",
        ("release",),
        BASE_TIME + 50 * _HOUR,
        _HOUR,
        (("release_script", "code"),),
    ),
    SeedRun(
        "sweep",
        "/scans",
        "completed",
        ("sweep",),
        BASE_TIME + 72 * _HOUR,
        _HOUR,
        (("sweep_a_params", "input"), ("sweep_a_result", "output")),
    ),
    SeedRun(
        "sweep",
        "/scans",
        "running",
        ("sweep",),
        BASE_TIME + 96 * _HOUR,
        None,
        (("sweep_b_params", "input"), ("sweep_b_result", "output")),
    ),
    SeedRun("queued run", "/demo", "created", (), BASE_TIME + 100 * _HOUR, None, ()),
)


OTHER_USERS: dict[str, str] = {"colleague": DEFAULT_TENANT, "outsider": "elsewhere"}
"""The users ``--seed multiuser`` adds, with their tenants (the default user's is
``DEFAULT_TENANT``)."""

SHARED_ARTIFACTS: dict[str, SeedArtifact] = {
    "shared_params": SeedArtifact("params.txt", b"alpha=0.3\n", "/home/colleague/params.txt"),
    "shared_result": SeedArtifact("result.txt", b"colleague: 0.91\n", "/home/colleague/out.txt"),
    "public_notes": SeedArtifact("notes.txt", b"a public run\n", "/home/outsider/notes.txt"),
}

SHARED_RUNS: tuple[SeedRun, ...] = (
    SeedRun(
        "shared with me",
        "/shared",
        "completed",
        ("shared",),
        BASE_TIME + 110 * _HOUR,
        _HOUR,
        (("shared_params", "input"), ("shared_result", "output")),
        user="colleague",
        visibility=(USER_NAME,),
    ),
    SeedRun(
        "tenant run",
        "/shared",
        "running",
        ("shared",),
        BASE_TIME + 111 * _HOUR,
        None,
        (("shared_params", "input"),),
        user="colleague",
        visibility=("tenant",),
    ),
    SeedRun(
        "public run",
        "/public",
        "completed",
        (),
        BASE_TIME + 112 * _HOUR,
        _HOUR,
        (("public_notes", "input"),),
        user="outsider",
        visibility=("public",),
    ),
    SeedRun(
        "colleague private",
        "/shared",
        "running",
        (),
        BASE_TIME + 113 * _HOUR,
        None,
        (),
        user="colleague",
    ),
    SeedRun(
        "outsider tenant run",
        "/public",
        "running",
        (),
        BASE_TIME + 114 * _HOUR,
        None,
        (),
        user="outsider",
        visibility=("tenant",),
    ),
)
"""Runs of :data:`OTHER_USERS`; the first three are visible to the default user."""


def artifact_content(key: str, large_size: int) -> bytes:
    """Return the full content of seeded artifact *key* (the large one at *large_size*)."""
    content = ARTIFACTS[key].content
    return large_content(0, large_size) if content is None else content


def _store_content(store: Store, artifact: SeedArtifact, large_size: int) -> tuple[str, int]:
    if artifact.content is not None:
        checksum = hashlib.sha256(artifact.content).hexdigest()
        if not store.has_blob(checksum):
            store.write_blob(checksum, [artifact.content])
        return checksum, len(artifact.content)
    digest = hashlib.sha256()
    spool_file, spool = store.open_spool()
    with spool_file:
        for chunk in _large_chunks(large_size):
            digest.update(chunk)
            spool_file.write(chunk)
    store.commit_blob(spool, digest.hexdigest())
    return digest.hexdigest(), large_size


def artifact_record(
    name: str, original_path: str, size: int, checksum: str, created: datetime, mime: str
) -> dict[str, object]:
    """The store record of an uploaded artifact (for :meth:`Store.create_artifact`)."""
    return {
        "name": name,
        "original_path": original_path,
        "size": size,
        "mime_type": mime,
        "checksum": checksum,
        "metadata": None,
        "uploaded": True,
        "created": format_timestamp(created),
        "storage_id": "devserver",
        "user": USER_NAME,
    }


def run_record(
    name: str,
    folder: str,
    status: str,
    created: datetime,
    *,
    started: datetime | None = None,
    ended: datetime | None = None,
    tags: tuple[str, ...] = (),
    description: str | None = None,
    metadata: dict[str, object] | None = None,
    system: dict[str, object] | None = None,
    user: str = USER_NAME,
    visibility: dict[str, object] | None = None,
) -> dict[str, object]:
    """The store record of a run (for :meth:`Store.create_run`) owned by *user*, private
    unless *visibility* says otherwise."""
    return {
        "name": name,
        "folder": folder,
        "status": status,
        "tags": list(tags),
        "description": description,
        "metadata": metadata or {},
        "system": system or {},
        "user": user,
        "created": format_timestamp(created),
        "started": format_timestamp(started) if started else None,
        "endtime": format_timestamp(ended) if ended else None,
        "modified": format_timestamp(ended or started or created),
        "heartbeat_timeout": 180,
        "ttl": None,
        "starred": False,
        "alerts": [],
        "notifications": {"state": "none"},
        "visibility": visibility or {"tenant": False, "public": False, "users": []},
    }


def _seed_runs(
    store: Store, runs: tuple[SeedRun, ...], artifacts: dict[str, SeedArtifact], large_size: int
) -> dict[str, str]:
    """Store *artifacts* and *runs* (attached as each run says); return the artifact ids."""
    artifact_ids: dict[str, str] = {}
    for offset, (key, artifact) in enumerate(artifacts.items()):
        checksum, length = _store_content(store, artifact, large_size)
        record = store.create_artifact(
            artifact_record(
                artifact.name,
                artifact.original_path,
                length + OBJECT_SIZE_OVERHEAD if artifact.is_object else length,
                checksum,
                BASE_TIME + timedelta(minutes=offset),
                artifact.mime,
            )
        )
        artifact_ids[key] = record["id"]
    for run in runs:
        started = run.created + timedelta(seconds=1) if run.status != "created" else None
        ended = started + run.duration if started and run.duration else None
        record = store.create_run(
            run_record(
                run.name,
                run.folder,
                run.status,
                run.created,
                started=started,
                ended=ended,
                tags=tuple(run.tags),
                description=run.description or None,
                metadata={"seeded": True},
                system={"hostname": "demo-host", "cwd": "/home/demo"},
                user=run.user,
                visibility=run.visibility_record(),
            )
        )
        for key, category in run.artifacts:
            store.attach(record["id"], artifact_ids[key], category)
    return artifact_ids


def seed_demo(store: Store, large_size: int) -> dict[str, str]:
    """Fill *store* with RUNS and ARTIFACTS; return the artifact ids by ARTIFACTS key."""
    return _seed_runs(store, RUNS, ARTIFACTS, large_size)


def seed_multiuser(store: Store, large_size: int) -> dict[str, str]:
    """The demo, plus OTHER_USERS and their SHARED_RUNS; return the artifact ids by key of
    ARTIFACTS and SHARED_ARTIFACTS."""
    for user, tenant in OTHER_USERS.items():
        store.set_tenant(user, tenant)
    return seed_demo(store, large_size) | _seed_runs(store, SHARED_RUNS, SHARED_ARTIFACTS, 0)


SEEDS = {"demo": seed_demo, "multiuser": seed_multiuser}
"""What ``--seed NAME`` runs."""

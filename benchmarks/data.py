"""The devserver data directory of a benchmark run, written directly with its Store.

Content is generated, never stored twice in memory: blob *i*'s block *j* is
``seed.large_block(first_block + j)``, a distinct rotation of one pseudo-random MiB, so
every file has its own bytes (and checksum) and :meth:`Blob.content` recomputes any range
for verification without reading the blob.

Layout (sizes from :class:`Sizes`):

- run ``bench``, ``output/``: ``large.bin`` (sequential, head, random reads), ``ttfb-NN.bin``
  (first-byte latency), ``par-NN.bin`` (parallel readers; the first ``readers`` are the
  parallel job's, all of them the memory job's);
- run ``upload``: empty, the uploads land in its ``input/``;
- runs ``list-NNNN`` with ``per_run`` artifacts each over the three categories, and run
  ``list-big`` with ``big_dir`` artifacts in ``output/``: all share one small blob.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simvuefs.devserver.seed import LARGE_BLOCK, large_block
from simvuefs.devserver.state import USER_NAME
from simvuefs.devserver.store import Store
from simvuefs.models import CATEGORIES, format_timestamp

MIB = 1024 * 1024
GIB = 1024 * MIB
BENCH_RUN = "bench"
UPLOAD_RUN = "upload"
BIG_RUN = "list-big"
BASE_TIME = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sizes:
    """How big everything is (the full run's defaults; ``quick()`` for the smoke test)."""

    large: int = GIB
    ttfb_files: int = 8
    ttfb_size: int = 4 * MIB
    readers: int = 16
    reader_size: int = 64 * MIB
    memory_passes: int = 4
    """The memory job's readers read this many files each (16 x 4 x 64 MiB = 4 GiB)."""
    runs: int = 1000
    per_run: int = 10
    big_dir: int = 1000
    upload: int = GIB
    random_reads: int = 16

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            large=32 * MIB,
            ttfb_files=3,
            ttfb_size=MIB,
            readers=4,
            reader_size=8 * MIB,
            memory_passes=2,
            runs=100,
            per_run=3,
            big_dir=100,
            upload=16 * MIB,
            random_reads=4,
        )


@dataclass(frozen=True)
class Blob:
    """A generated artifact: where it is in the mount, its checksum and content."""

    run: str
    category: str
    name: str
    size: int
    first_block: int
    sha256: str

    def content(self, offset: int, length: int) -> bytes:
        """Return bytes [offset, offset + length) (clipped to the size)."""
        end = min(offset + length, self.size)
        parts = []
        while offset < end:
            index, inner = divmod(offset, LARGE_BLOCK)
            take = min(LARGE_BLOCK - inner, end - offset)
            parts.append(large_block(self.first_block + index)[inner : inner + take])
            offset += take
        return b"".join(parts)


@dataclass(frozen=True)
class Dataset:
    """What :func:`build` made."""

    data_dir: Path
    large: Blob
    ttfb: list[Blob]
    readers: list[Blob]
    upload_sources: dict[str, tuple[Path, str]]
    """Local files of ``sizes.upload`` bytes and their sha256, different content per uploader."""
    sizes: Sizes


def _blocks(first_block: int, size: int) -> int:
    return first_block + (size + LARGE_BLOCK - 1) // LARGE_BLOCK


def _write_generated(path: Path, first_block: int, size: int) -> str:
    """Write generated content to *path*; return its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for index in range((size + LARGE_BLOCK - 1) // LARGE_BLOCK):
            chunk = large_block(first_block + index)[: size - index * LARGE_BLOCK]
            digest.update(chunk)
            file.write(chunk)
    return digest.hexdigest()


class _Builder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.next_block = 0
        self.minute = 0

    def blob(self, run: str, category: str, name: str, size: int) -> Blob:
        first = self.next_block
        self.next_block = _blocks(first, size)
        spool_file, spool = self.store.open_spool()
        spool_file.close()
        sha = _write_generated(spool, first, size)
        self.store.commit_blob(spool, sha)
        return Blob(run, category, name, size, first, sha)

    def artifact(self, name: str, sha256: str, size: int) -> str:
        self.minute += 1
        record = self.store.create_artifact(
            {
                "name": name,
                "original_path": f"/home/bench/{name}",
                "size": size,
                "mime_type": "application/octet-stream",
                "checksum": sha256,
                "metadata": None,
                "uploaded": True,
                "created": format_timestamp(BASE_TIME + timedelta(seconds=self.minute)),
                "storage_id": "devserver",
                "user": USER_NAME,
            }
        )
        return str(record["id"])

    def run(self, name: str, index: int) -> str:
        stamp = format_timestamp(BASE_TIME + timedelta(minutes=index))
        record = self.store.create_run(
            {
                "name": name,
                "folder": "/bench",
                "status": "completed",
                "tags": [],
                "description": None,
                "metadata": {},
                "system": {},
                "user": USER_NAME,
                "created": stamp,
                "started": stamp,
                "endtime": stamp,
                "modified": stamp,
                "heartbeat_timeout": 180,
                "ttl": None,
                "starred": False,
                "alerts": [],
                "notifications": {"state": "none"},
                "visibility": {"tenant": False, "public": False, "users": []},
            }
        )
        return str(record["id"])


def build(data_dir: Path, work_dir: Path, sizes: Sizes) -> Dataset:
    """Create the data directory *data_dir* (new) and the upload sources in *work_dir*."""
    store = Store(data_dir)
    builder = _Builder(store)
    try:
        bench_id = builder.run(BENCH_RUN, 0)
        builder.run(UPLOAD_RUN, 1)
        large = builder.blob(BENCH_RUN, "output", "large.bin", sizes.large)
        ttfb = [
            builder.blob(BENCH_RUN, "output", f"ttfb-{i:02d}.bin", sizes.ttfb_size)
            for i in range(sizes.ttfb_files)
        ]
        readers = [
            builder.blob(BENCH_RUN, "output", f"par-{i:02d}.bin", sizes.reader_size)
            for i in range(sizes.readers * sizes.memory_passes)
        ]
        for blob in [large, *ttfb, *readers]:
            store.attach(bench_id, builder.artifact(blob.name, blob.sha256, blob.size), "output")
        small = b"listing\n"
        small_sha = hashlib.sha256(small).hexdigest()
        store.write_blob(small_sha, [small])
        for index in range(sizes.runs):
            run_id = builder.run(f"list-{index:04d}", index + 2)
            for number in range(sizes.per_run):
                artifact = builder.artifact(f"file-{number:02d}.dat", small_sha, len(small))
                store.attach(run_id, artifact, CATEGORIES[number % len(CATEGORIES)])
        big_id = builder.run(BIG_RUN, sizes.runs + 2)
        for number in range(sizes.big_dir):
            artifact = builder.artifact(f"file-{number:04d}.dat", small_sha, len(small))
            store.attach(big_id, artifact, "output")
        sources = {}
        for who in ("simvuefs", "httpx"):
            path = work_dir / f"upload-{who}.bin"
            sources[who] = path, _write_generated(path, builder.next_block, sizes.upload)
            builder.next_block = _blocks(builder.next_block, sizes.upload)
    finally:
        store.close()
    return Dataset(data_dir, large, ttfb, readers, sources, sizes)

"""The devserver data directory of a benchmark run, written directly with its Store.

Content is generated, never stored twice in memory: blob *i*'s block *j* is
``seed.large_block(first_block + j)``, a distinct rotation of one pseudo-random MiB, so
every file has its own bytes (and checksum) and :meth:`Blob.content` recomputes any range
for verification without reading the blob.

Layout (sizes from :class:`Sizes`):

- run ``bench``, ``output/``: ``large.bin`` (sequential, head, random reads), ``ttfb-NN.bin``
  (first-byte latency), ``par-NN.bin`` (parallel readers; the first ``readers`` are the
  parallel job's, all of them the memory job's);
- the transfer job's pattern files (``benchmarks.patterns``), in run ``bench``'s ``output/``:
  ``records.bin`` and ``memmap.bin`` (generated), ``table.h5`` and ``table.parquet``
  (written with h5py and pyarrow when they are installed; their expected column is kept);
- run ``upload``: empty, the uploads land in its ``input/``;
- runs ``list-NNNN`` with ``per_run`` artifacts each over the three categories, and run
  ``list-big`` with ``big_dir`` artifacts in ``output/``: all share one small blob.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import formats
from simvuefs.devserver.seed import LARGE_BLOCK, artifact_record, large_block, run_record
from simvuefs.devserver.store import Store
from simvuefs.models import CATEGORIES

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
    pattern_size: int = 128 * MIB
    """Each pattern file's size (about, for HDF5 and Parquet)."""
    record_reads: int = 64
    mmap_reads: int = 200

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
            pattern_size=8 * MIB,
            record_reads=8,
            mmap_reads=20,
        )


@dataclass(frozen=True)
class Blob:
    """A generated artifact: where it is in the mount, its checksum and content."""

    run: str
    category: str
    name: str
    size: int
    first_block: int
    """Its first generated block; -1 for files written by a library (HDF5, Parquet)."""
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
class PatternFile:
    """A file of one of the transfer job's patterns, and what reading it must give."""

    pattern: str
    blob: Blob
    """Its place and checksum (``content()`` is meaningful for generated files only)."""
    expected: Any = None
    """For HDF5 and Parquet: the column the pattern reads."""


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
    patterns: dict[str, PatternFile]
    """By pattern name; HDF5 and Parquet only when h5py and pyarrow are installed."""


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
    """Creates records in the store; generated files are written by a pool of two threads
    (hashing and writing release the GIL), each file's blocks chosen here in order."""

    def __init__(self, store: Store, pool: ThreadPoolExecutor) -> None:
        self.store = store
        self.pool = pool
        self.next_block = 0
        self.minute = 0

    def generate(self, path: Path, size: int) -> Future[str]:
        """Start writing *size* new generated bytes to *path*; the future gives the sha256."""
        first = self.next_block
        self.next_block = _blocks(first, size)
        return self.pool.submit(_write_generated, path, first, size)

    def blob(self, run: str, category: str, name: str, size: int) -> Future[Blob]:
        """Start storing a generated blob; the future gives its :class:`Blob`."""
        spool_file, spool = self.store.open_spool()
        spool_file.close()
        first = self.next_block
        self.next_block = _blocks(first, size)

        def store_blob() -> Blob:
            sha256 = _write_generated(spool, first, size)
            self.store.commit_blob(spool, sha256)
            return Blob(run, category, name, size, first, sha256)

        return self.pool.submit(store_blob)

    def formatted(
        self, name: str, write: Callable[[Path, int], Any], size: int
    ) -> tuple[Blob, Any]:
        """Store a file that *write(path, size)* makes; return its Blob (no generated
        content) and what *write* returned."""
        spool_file, spool = self.store.open_spool()
        spool_file.close()
        expected = write(spool, size)
        digest = hashlib.sha256()
        with spool.open("rb") as file:
            while chunk := file.read(LARGE_BLOCK):
                digest.update(chunk)
        stored_size = spool.stat().st_size
        self.store.commit_blob(spool, digest.hexdigest())
        return Blob(BENCH_RUN, "output", name, stored_size, -1, digest.hexdigest()), expected

    def artifact(self, name: str, sha256: str, size: int) -> str:
        self.minute += 1
        created = BASE_TIME + timedelta(seconds=self.minute)
        record = self.store.create_artifact(
            artifact_record(
                name, f"/home/bench/{name}", size, sha256, created, "application/octet-stream"
            )
        )
        return str(record["id"])

    def run(self, name: str, index: int) -> str:
        stamp = BASE_TIME + timedelta(minutes=index)
        record = self.store.create_run(
            run_record(name, "/bench", "completed", stamp, started=stamp, ended=stamp)
        )
        return str(record["id"])


def build(data_dir: Path, work_dir: Path, sizes: Sizes) -> Dataset:
    """Create the data directory *data_dir* (new) and the upload sources in *work_dir*."""
    store = Store(data_dir)
    try:
        with ThreadPoolExecutor(2) as pool:
            builder = _Builder(store, pool)
            paths = {who: work_dir / f"upload-{who}.bin" for who in ("simvuefs", "httpx")}
            sources = {who: builder.generate(path, sizes.upload) for who, path in paths.items()}
            large_future = builder.blob(BENCH_RUN, "output", "large.bin", sizes.large)
            ttfb_futures = [
                builder.blob(BENCH_RUN, "output", f"ttfb-{i:02d}.bin", sizes.ttfb_size)
                for i in range(sizes.ttfb_files)
            ]
            reader_futures = [
                builder.blob(BENCH_RUN, "output", f"par-{i:02d}.bin", sizes.reader_size)
                for i in range(sizes.readers * sizes.memory_passes)
            ]
            generated = {
                pattern: builder.blob(BENCH_RUN, "output", f"{pattern}.bin", sizes.pattern_size)
                for pattern in ("records", "memmap")
            }
            large = large_future.result()
            ttfb = [f.result() for f in ttfb_futures]
            readers = [f.result() for f in reader_futures]
            upload_sources = {who: (paths[who], sources[who].result()) for who in paths}
            patterns = {
                "buffered": PatternFile("buffered", generated["records"].result()),
                "mmap": PatternFile("mmap", generated["memmap"].result()),
            }
        for pattern, name, write in (
            ("hdf5", "table.h5", formats.write_hdf5),
            ("parquet", "table.parquet", formats.write_parquet),
        ):
            if formats.available(pattern):
                blob, expected = builder.formatted(name, write, sizes.pattern_size)
                patterns[pattern] = PatternFile(pattern, blob, expected)
        bench_id = builder.run(BENCH_RUN, 0)
        builder.run(UPLOAD_RUN, 1)
        for blob in [large, *ttfb, *readers, *(p.blob for p in patterns.values())]:
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
    finally:
        store.close()
    return Dataset(data_dir, large, ttfb, readers, upload_sources, sizes, patterns)

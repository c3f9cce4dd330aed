"""The HDF5 and Parquet files of the transfer job's patterns (h5py and pyarrow: the bench
extra; callers check :func:`available` first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

HDF5_CHUNK = (1000, 10)
"""Rows x columns of a chunk: 80 KB of float64, as in the issue's h5py measurement."""
PARQUET_COLUMNS = 16
PARQUET_ROW_GROUP = 128 * 1024


def available(pattern: str) -> bool:
    """True if the library *pattern* needs is installed (h5py, pyarrow)."""
    module = {"hdf5": "h5py", "parquet": "pyarrow.parquet"}.get(pattern)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def write_hdf5(path: Path, size: int) -> Any:
    """Write a chunked float64 dataset ``table`` of about *size* bytes; return column 0."""
    import h5py

    columns = 20 * HDF5_CHUNK[1]
    rows = max(HDF5_CHUNK[0], size // (8 * columns) // HDF5_CHUNK[0] * HDF5_CHUNK[0])
    values = np.random.default_rng(14).standard_normal((rows, columns))
    with h5py.File(path, "w") as file:
        file.create_dataset("table", data=values, chunks=HDF5_CHUNK)
    return values[:, 0].copy()


def write_parquet(path: Path, size: int) -> Any:
    """Write :data:`PARQUET_COLUMNS` float64 columns, about *size* bytes in all,
    uncompressed in row groups of :data:`PARQUET_ROW_GROUP`; return column ``c3``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = max(PARQUET_ROW_GROUP, size // (8 * PARQUET_COLUMNS))
    rng = np.random.default_rng(15)
    columns = {f"c{i}": rng.standard_normal(rows) for i in range(PARQUET_COLUMNS)}
    pq.write_table(pa.table(columns), path, row_group_size=PARQUET_ROW_GROUP, compression="none")
    return columns["c3"]

"""The jobs, scaled-down versions of mountpoint-s3's benchmark jobs, by name in run order
(each a function of a :class:`~benchmarks.context.Context` returning a table; its docstring
is its ``--list`` line)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks import diskcache, listing, reads, upload
from benchmarks.context import Context
from benchmarks.measure import Table

Job = Callable[[Context], Table]
JOBS: dict[str, Job] = {
    job.__name__: job
    for job in (
        reads.sequential,
        reads.ttfb,
        reads.transfer,
        reads.parallel,
        reads.memory,
        diskcache.disk_warm,
        diskcache.cluster,
        listing.listing,
        upload.upload,
    )
}

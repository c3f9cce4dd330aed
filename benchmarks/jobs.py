"""The jobs, scaled-down versions of mountpoint-s3's benchmark jobs, by name in run order
(each a function of a :class:`~benchmarks.context.Context` returning a table; its docstring
is its ``--list`` line)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks import diskcache, listing, reads, transfer, upload
from benchmarks.context import Context
from benchmarks.measure import Table
from benchmarks.profile import Profile

Job = Callable[[Context], Table]
JOBS: dict[str, Job] = {
    job.__name__: job
    for job in (
        reads.sequential,
        reads.ttfb,
        transfer.transfer,
        reads.parallel,
        reads.memory,
        diskcache.disk_warm,
        diskcache.cluster,
        listing.listing,
        upload.upload,
    )
}
FIELD_SKIPS = frozenset({"memory"})
"""Jobs the field profile leaves out: the memory job streams 4 GiB to load the daemon's
buffers, which the field's parallel job (16 readers) reports already."""


def jobs_of(profile: Profile) -> list[str]:
    """The jobs of a run in *profile*, in run order."""
    return [name for name in JOBS if not (profile.field and name in FIELD_SKIPS)]

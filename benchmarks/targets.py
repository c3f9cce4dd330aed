"""The issues' targets, each checked against one run's tables (ratios from that run): issue
9's for the loopback profile, issue 14's for the field profile, and issue 14's small-read
patterns (bytes sent <= 1.5x bytes asked) in both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import diskcache, patterns
from benchmarks.context import CURL, RANGED
from benchmarks.data import MIB
from benchmarks.listing import CONCURRENT_WALK
from benchmarks.measure import Table
from benchmarks.profile import Profile
from benchmarks.reads import CURL_TTFB
from benchmarks.transfer import GET_4K, LATENCY, pattern_column
from benchmarks.upload import HTTPX_UPLOAD

Tables = dict[str, Table]


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None
    """None: the job that measures it did not run."""


def _median(tables: Tables, job: str, contender: str) -> float:
    return tables[job].results[contender].median


def _note(tables: Tables, job: str, contender: str, column: str) -> int:
    return int(tables[job].results[contender].notes[column].split()[0].replace(",", ""))


def _sequential(t: Tables) -> list[Verdict]:
    cold = _median(t, "sequential", "simvuefs cold")
    rclone = _median(t, "sequential", "rclone cold")
    curl = _median(t, "sequential", CURL)
    warm = _median(t, "sequential", "simvuefs warm")
    return [
        Verdict(
            "sequential cold read >= 2x rclone mount",
            f"{cold / rclone:.2f}x ({cold:.0f} vs {rclone:.0f} MiB/s)",
            cold >= 2 * rclone,
        ),
        Verdict(
            "sequential cold read >= 0.5x curl",
            f"{cold / curl:.2f}x ({cold:.0f} vs {curl:.0f} MiB/s)",
            cold >= 0.5 * curl,
        ),
        Verdict(
            "warm re-read >= 2x the cold read",
            f"{warm / cold:.2f}x ({warm:.0f} MiB/s)",
            warm >= 2 * cold,
        ),
    ]


def _ttfb(t: Tables) -> list[Verdict]:
    ours = _median(t, "ttfb", "simvuefs")
    direct = _median(t, "ttfb", CURL)
    return [
        Verdict(
            "TTFB <= 2x a direct ranged GET (curl)",
            f"{ours / direct:.2f}x ({ours:.1f} vs {direct:.1f} ms)",
            ours <= 2 * direct,
        )
    ]


def _transfer(t: Tables) -> list[Verdict]:
    result = t["transfer"].results["simvuefs"]
    head = result.median
    per_read = result.notes["random: bytes per read"]
    per_read_bytes = _parse_size(per_read)
    return [
        Verdict(
            "head -c 4096 of the large file transfers <= 2 MiB",
            f"{head / MIB:.2f} MiB",
            head <= 2 * MIB,
        ),
        Verdict("random 4 KiB reads transfer <= 1 MiB each", per_read, per_read_bytes <= MIB),
        *_patterns(t),
    ]


def _parse_size(text: str) -> float:
    number, _, unit = text.partition(" ")
    return (
        float(number.replace(",", "")) * {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}[unit]
    )


def _parallel(t: Tables) -> list[Verdict]:
    aggregate = _median(t, "parallel", "simvuefs")
    verdicts = []
    if "sequential" in t:
        single = _median(t, "sequential", "simvuefs cold")
        verdicts.append(
            Verdict(
                "parallel readers aggregate >= 0.8x single-stream simvuefs",
                f"{aggregate / single:.2f}x ({aggregate:.0f} vs {single:.0f} MiB/s)",
                aggregate >= 0.8 * single,
            )
        )
    rss = max(t["parallel"].results["simvuefs"].peak_rss)
    verdicts.append(
        Verdict("parallel readers: daemon RSS bounded (reported)", f"{rss / MIB:.0f} MiB", None)
    )
    return verdicts


def _memory(t: Tables) -> list[Verdict]:
    rss = max(t["memory"].results["simvuefs"].peak_rss)
    return [
        Verdict(
            f"daemon peak RSS < 250 MiB while readers stream ({t['memory'].title.split(': ')[1]})",
            f"{rss / MIB:.0f} MiB",
            rss < 250 * MIB,
        )
    ]


def _listing(t: Tables) -> list[Verdict]:
    table = t["listing"]
    runs = int(table.title.split("; ")[1].split()[0].replace(",", ""))
    find = next(c for c in table.results if c.startswith("find runs (cold"))
    requests = _note(t, "listing", find, "API requests")
    big = next(c for c in table.results if c.startswith("ls -l of a"))
    lists = _note(t, "listing", big, "artifact-list requests")
    return [
        Verdict(
            "find over all runs: API requests O(runs) (<= 2 per run)",
            f"{requests:,} requests for {runs:,} runs",
            requests <= 2 * runs,
        ),
        Verdict(
            "ls -l of a big directory (1,000 artifacts): 1 list request",
            f"{lists} artifact-list requests",
            lists == 1,
        ),
    ]


def _upload(t: Tables) -> list[Verdict]:
    ours = _median(t, "upload", "simvuefs cp")
    direct = _median(t, "upload", HTTPX_UPLOAD)
    return [
        Verdict(
            "upload >= 0.8x the direct httpx upload",
            f"{ours / direct:.2f}x ({ours:.0f} vs {direct:.0f} MiB/s)",
            ours >= 0.8 * direct,
        )
    ]


def _patterns(t: Tables) -> list[Verdict]:
    notes = t["transfer"].results["simvuefs"].notes
    verdicts = []
    for pattern in patterns.READERS:
        ratio = notes.get(pattern_column(pattern))
        if ratio is None:  # h5py or pyarrow not installed
            continue
        verdicts.append(
            Verdict(
                f"{pattern} pattern: bytes sent <= 1.5x bytes asked",
                f"{ratio.split()[0]}x {' '.join(ratio.split()[1:])}",
                float(ratio.split()[0]) <= 1.5,
            )
        )
    return verdicts


def _ratio(name: str, ours: float, theirs: float, unit: str, ok: bool) -> Verdict:
    return Verdict(name, f"{ours / theirs:.2f}x ({ours:.4g} vs {theirs:.4g} {unit})", ok)


def _field_sequential(t: Tables) -> list[Verdict]:
    ours = _median(t, "sequential", "simvuefs cold")
    ranged = _median(t, "sequential", RANGED)
    new = _median(t, "sequential", "rclone new cold")
    default = _median(t, "sequential", _row(t, "sequential", "rclone cold"))
    return [
        _ratio(f"sequential cold >= 0.8x {RANGED}", ours, ranged, "MiB/s", ours >= 0.8 * ranged),
        _ratio(
            "sequential cold >= 1.0x rclone new (chunk streams)", ours, new, "MiB/s", ours >= new
        ),
        _ratio("sequential cold >= 5x rclone default", ours, default, "MiB/s", ours >= 5 * default),
    ]


def _row(t: Tables, job: str, start: str) -> str:
    """The contender of *job* whose name starts with *start* (labels may add a prefix)."""
    return next(name for name in t[job].results if name.startswith(start))


def _field_parallel(t: Tables) -> list[Verdict]:
    ours = _median(t, "parallel", "simvuefs")
    curls = t["parallel"].reference or ""
    theirs = _median(t, "parallel", curls)
    return [
        _ratio(f"parallel readers >= 0.8x {curls}", ours, theirs, "MiB/s", ours >= 0.8 * theirs)
    ]


def _field_ttfb(t: Tables) -> list[Verdict]:
    ours = _median(t, "ttfb", "simvuefs")
    theirs = _median(t, "ttfb", CURL_TTFB)
    return [_ratio(f"TTFB <= 1.5x {CURL_TTFB}", ours, theirs, "ms", ours <= 1.5 * theirs)]


def _field_transfer(t: Tables) -> list[Verdict]:
    ours = float(t["transfer"].results["simvuefs"].notes[LATENCY[0]])
    theirs = float(t["transfer"].results[GET_4K].notes[LATENCY[0]])
    name = "random 4 KiB reads: median latency <= 2x a 4 KiB ranged GET"
    return [_ratio(name, ours, theirs, "ms", ours <= 2 * theirs), *_patterns(t)]


def _field_listing(t: Tables) -> list[Verdict]:
    ours = _median(t, "listing", _row(t, "listing", "find runs (cold"))
    theirs = _median(t, "listing", CONCURRENT_WALK)
    name = f"find runs <= 2x a direct API walk ({CONCURRENT_WALK.split(', ')[1]})"
    return [_ratio(name, ours, theirs, "ms", ours <= 2 * theirs)]


def _field_upload(t: Tables) -> list[Verdict]:
    ours = _median(t, "upload", "simvuefs cp")
    theirs = _median(t, "upload", HTTPX_UPLOAD)
    return [_ratio("upload >= 0.9x the direct upload", ours, theirs, "MiB/s", ours >= 0.9 * theirs)]


def _field_memory(t: Tables) -> list[Verdict]:
    """The daemon's peak RSS over every job's simvuefs rows."""
    peaks = [
        (max(result.peak_rss), job)
        for job, table in t.items()
        for name, result in table.results.items()
        if name.startswith("simvuefs") and result.peak_rss
    ]
    if not peaks:
        return []
    rss, job = max(peaks)
    return [
        Verdict(
            "daemon peak RSS < 250 MiB in every job",
            f"{rss / MIB:.0f} MiB ({job})",
            rss < 250 * MIB,
        )
    ]


def _disk_warm(t: Tables) -> list[Verdict]:
    warm = _median(t, "disk_warm", "simvuefs disk-warm")
    rclone = _median(t, "disk_warm", "rclone full disk-warm")
    cold = _median(t, "disk_warm", "simvuefs cold")
    uncached = _median(t, "disk_warm", diskcache.NO_CACHE)
    return [
        Verdict(
            "cold read with --cache-dir >= 0.9x without",
            f"{cold / uncached:.2f}x ({cold:.0f} vs {uncached:.0f} MiB/s)",
            cold >= 0.9 * uncached,
        ),
        Verdict(
            "disk-warm read >= 2x rclone --vfs-cache-mode full's",
            f"{warm / rclone:.2f}x ({warm:.0f} vs {rclone:.0f} MiB/s)",
            warm >= 2 * rclone,
        ),
    ]


def _field_disk_warm(t: Tables) -> list[Verdict]:
    warm = _median(t, "disk_warm", "simvuefs disk-warm")
    cold = _median(t, "disk_warm", "simvuefs cold")
    return [
        *_disk_warm(t),
        Verdict(
            "disk-warm read >= 3x simvuefs cold (field profile)",
            f"{warm / cold:.2f}x ({warm:.0f} vs {cold:.0f} MiB/s)",
            warm >= 3 * cold,
        ),
    ]


def _cluster(t: Tables) -> list[Verdict]:
    sent = _note(t, "cluster", "shared --cache-dir", "storage bytes")
    ratio = float(t["cluster"].results["shared --cache-dir"].notes["x the file"])
    return [
        Verdict(
            "cluster: storage sends <= 1.25x the file",
            f"{ratio:.2f}x ({sent / MIB:.0f} MiB)",
            ratio <= 1.25,
        )
    ]


FIELD_CHECKS: dict[str, Callable[[Tables], list[Verdict]]] = {
    "sequential": _field_sequential,
    "parallel": _field_parallel,
    "ttfb": _field_ttfb,
    "transfer": _field_transfer,
    "listing": _field_listing,
    "upload": _field_upload,
    "disk_warm": _field_disk_warm,
    "cluster": _cluster,
}


CHECKS: dict[str, Callable[[Tables], list[Verdict]]] = {
    "sequential": _sequential,
    "ttfb": _ttfb,
    "transfer": _transfer,
    "parallel": _parallel,
    "memory": _memory,
    "listing": _listing,
    "upload": _upload,
    "disk_warm": _disk_warm,
    "cluster": _cluster,
}


def evaluate(tables: Tables, profile: Profile) -> list[Verdict]:
    """Return the verdicts of every target of *profile* whose job ran."""
    verdicts = []
    checks = FIELD_CHECKS if profile.field else CHECKS
    for job, check in checks.items():
        if job in tables:
            try:
                verdicts.extend(check(tables))
            except (KeyError, ValueError, ZeroDivisionError):  # a contender it needs failed
                verdicts.append(Verdict(f"{job} targets", "not measured: a contender failed", None))
    if profile.field:
        verdicts += _field_memory(tables)
    return verdicts

"""The issue's targets, each checked against one run's tables (ratios from that run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.context import CURL
from benchmarks.data import MIB
from benchmarks.measure import Table
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


def _disk_warm(t: Tables) -> list[Verdict]:
    warm = _median(t, "disk_warm", "simvuefs disk-warm")
    rclone = _median(t, "disk_warm", "rclone full disk-warm")
    cold = _median(t, "disk_warm", "simvuefs cold")
    return [
        Verdict(
            "disk-warm read >= 2x rclone --vfs-cache-mode full's",
            f"{warm / rclone:.2f}x ({warm:.0f} vs {rclone:.0f} MiB/s)",
            warm >= 2 * rclone,
        ),
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


def evaluate(tables: Tables) -> list[Verdict]:
    """Return the verdicts of every target whose job ran."""
    verdicts = []
    for job, check in CHECKS.items():
        if job in tables:
            try:
                verdicts.extend(check(tables))
            except (KeyError, ValueError, ZeroDivisionError):  # a contender it needs failed
                verdicts.append(Verdict(f"{job} targets", "not measured: a contender failed", None))
    return verdicts

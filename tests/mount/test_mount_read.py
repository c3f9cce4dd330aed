"""Acceptance tests of the read path: real mounts of the real devserver, real tools.

Every test goes through the kernel: the ``simvuefs mount`` CLI serves the seeded devserver
(``--seed demo``, see :mod:`simvuefs.devserver.seed`) and the checks run ``ls``, ``find``,
``stat``, ``du``, ``getfattr``, ``cat``, ``cp``, ``tar``, ``rsync``, ``dd``, a small C
program and Python threads against the mount point.

The expectations are computed independently of simvuefs: names from the server's own run
and artifact records (``GET /api/...``) by the documented naming rules, bytes from what the
OFFICIAL simvue client downloads from the same server, and slices from the seed's known
content.

Most tests share one mount per module (reads do not change state the other tests look at).
Tests that count transferred bytes, inject faults or test unmounting get fresh mounts, since
the daemon's block cache and the kernel's page cache would otherwise hide the transfers.
When a test fails, the daemon's log is at ``Mount.log_file`` (shown in the traceback).
"""

from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import grp
import json
import mmap
import os
import pwd
import random
import signal
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from devserver_util import SEEDED_LARGE_SIZE
from helpers import new_run, sha256, sha256_file, store_artifact, tree_digests

from simvuefs.devserver import seed
from testbed import REPO
from testbed.devserver import DevServer
from testbed.mounts import Mount, daemon_pids, is_mounted, mounted
from testbed.processes import run_tool, wait_until

MIB = 1024 * 1024
CATEGORIES = ("input", "output", "code")
RUN_SLASH = "\u2215"
LARGE_NAME = "large.bin"
# What one `head -c 4096` or one `dd` of 4 KiB may cost in storage transfer.
SMALL_READ_BUDGET = 2 * MIB
# simvuefs's per-operation deadline (Settings.request_timeout), and the slack a tool gets
# beyond it before a test gives up on it (a hang, not a slow machine).
REQUEST_TIMEOUT = 30.0
DEADLINE_SLACK = 10.0
OFFICIAL_CLIENT_TIMEOUT = 180.0


# -- the expected tree, from the server's records and the official client ------------------


@dataclass(frozen=True)
class ExpectedFile:
    """One artifact as the mount should show it."""

    path: str  # relative to the mount point: runs/<run dir>/<category>/<name parts>
    run_id: str
    category: str
    record: dict[str, Any]  # the server's artifact record
    official: Path  # the file the official client downloaded

    @property
    def created_ns(self) -> int:
        when = datetime.fromisoformat(self.record["created"]).replace(tzinfo=UTC)
        return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000

    @property
    def content(self) -> bytes:
        return self.official.read_bytes()

    @property
    def sha256(self) -> str:
        return sha256_file(self.official)


@dataclass(frozen=True)
class Catalog:
    """What the seeded server holds, laid out by the documented naming rules."""

    runs: list[dict[str, Any]]  # the server's run records
    run_dirs: dict[str, str]  # listed name in runs/ -> run id
    aliases: dict[str, str]  # "<name>@<run id>" -> run id, for every run
    files: dict[str, ExpectedFile]  # path -> file
    dirs: set[str]  # every directory path, "runs" included
    single_large: Path  # large.bin of "demo run" fetched with get_artifact_as_file

    def file_named(self, name: str, run_dir: str = "demo run") -> ExpectedFile:
        matches = [f for f in self.files.values() if f.path.startswith(f"runs/{run_dir}/")]
        matches = [f for f in matches if f.path.endswith("/" + name)]
        assert len(matches) == 1, (name, run_dir, matches)
        return matches[0]


def run_dir_names(runs: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """Apply the run naming rules: ``/`` -> U+2215; among runs with one name the newest
    (by created, then id) gets the plain name, the others ``<name>@<id>``; every run is
    also reachable as ``<name>@<id>``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["name"].replace("/", RUN_SLASH), []).append(run)
    listed: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for base, group in groups.items():
        group.sort(key=lambda r: (r["created"], r["id"]), reverse=True)
        listed[base] = group[0]["id"]
        for run in group:
            aliases[f"{base}@{run['id']}"] = run["id"]
            if run is not group[0]:
                listed[f"{base}@{run['id']}"] = run["id"]
    return listed, aliases


_OFFICIAL_DOWNLOAD = """
import json, sys
from simvue.client import Client
client = Client()
for run_id, category, target in json.loads(sys.argv[1]):
    client.get_artifacts_as_files(run_id, category=category, output_dir=target)
run_id, name, target = json.loads(sys.argv[2])
client.get_artifact_as_file(run_id, name, output_dir=target)
"""


def official_client_env(server: DevServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
    env.update(server.env())
    env.update(HOME=str(home), SIMVUE_OFFLINE_DIRECTORY=str(home / "offline"))
    return env


def build_catalog(server: DevServer, workdir: Path) -> Catalog:
    """List the server through its API and download everything with the official client."""
    response = server.api("GET", "/runs", params={"count": 100, "start": 0})
    response.raise_for_status()
    runs = response.json()["data"]
    assert 0 < len(runs) < 100
    run_dirs, aliases = run_dir_names(runs)
    dir_of_run = {run_id: name for name, run_id in run_dirs.items()}
    official = workdir / "official"
    plan = []
    listings: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        for category in CATEGORIES:
            answer = server.api(
                "GET", f"/runs/{run['id']}/artifacts", params={"category": category}
            )
            records = answer.json() if answer.status_code == 200 else []
            listings[run["id"], category] = records
            if records:
                target = official / run["id"] / category
                target.mkdir(parents=True)
                plan.append([run["id"], category, str(target)])
    newest_demo = run_dirs["demo run"]
    single = official / "single"
    single.mkdir(parents=True)
    home = workdir / "home"
    home.mkdir()
    run_tool(
        [
            sys.executable,
            "-c",
            _OFFICIAL_DOWNLOAD,
            json.dumps(plan),
            json.dumps([newest_demo, LARGE_NAME, str(single)]),
        ],
        timeout=OFFICIAL_CLIENT_TIMEOUT,
        cwd=workdir,
        env=official_client_env(server, home),
    )
    files: dict[str, ExpectedFile] = {}
    dirs = {"runs"}
    for (run_id, category), records in listings.items():
        base = f"runs/{dir_of_run[run_id]}/{category}"
        dirs |= {f"runs/{dir_of_run[run_id]}", base}
        for record in records:
            parts = [part for part in record["name"].split("/") if part]
            for depth in range(1, len(parts)):
                dirs.add("/".join([base, *parts[:depth]]))
            path = "/".join([base, *parts])
            assert path not in files, f"the seed has two artifacts at {path}"
            files[path] = ExpectedFile(
                path, run_id, category, record, official / run_id / category / record["name"]
            )
    return Catalog(runs, run_dirs, aliases, files, dirs, single / LARGE_NAME)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(
    _seeded_devserver_session: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Catalog:
    _seeded_devserver_session.clear_faults()
    return build_catalog(_seeded_devserver_session, tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def mount(
    _seeded_devserver_session: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    """One mount of the seeded devserver shared by the read-only tests of this module."""
    _seeded_devserver_session.clear_faults()  # whatever earlier modules left switched on
    with mounted(
        _seeded_devserver_session, tmp_path_factory.mktemp("mount"), "--read-only"
    ) as shared:
        yield shared


@pytest.fixture
def fresh_mount(seeded_devserver: DevServer, tmp_path: Path) -> Iterator[Mount]:
    """A mount of its own (cold block and page caches), faults cleared before it starts."""
    with mounted(seeded_devserver, tmp_path, "--read-only") as own:
        yield own


@pytest.fixture(scope="module")
def seekread(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/c/seekread.c, compiled with gcc for this test run."""
    binary = tmp_path_factory.mktemp("c") / "seekread"
    source = REPO / "tests" / "c" / "seekread.c"
    run_tool(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", binary, source])
    return binary


def settled_stats(server: DevServer, quiet: float = 0.5, timeout: float = 10.0) -> dict[str, Any]:
    """Return the server's counters once they stop moving (read-ahead may still be running)."""
    previous = server.stats()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(quiet)
        current = server.stats()
        if current["bytes_served"] == previous["bytes_served"]:
            return current
        previous = current
    return previous


# -- names, listing and attributes --------------------------------------------------------


def test_runs_are_listed_by_the_naming_rules(mount: Mount, catalog: Catalog) -> None:
    listing = run_tool(["ls", "-1a", mount.path / "runs"]).stdout.decode().splitlines()
    assert sorted(listing) == sorted([".", "..", *catalog.run_dirs])
    # The seeded hard cases, spelled out: '/' shown as U+2215, the older duplicate aliased.
    assert f"cfd{RUN_SLASH}mesh-study" in listing
    assert "cfd" not in listing
    sweeps = sorted((r for r in catalog.runs if r["name"] == "sweep"), key=lambda r: r["created"])
    assert len(sweeps) == 2
    assert catalog.run_dirs["sweep"] == sweeps[1]["id"]
    assert f"sweep@{sweeps[0]['id']}" in listing
    assert f"sweep@{sweeps[1]['id']}" not in listing
    for name in ("demo run", "scan:2025-03", "v1.2.release", "queued run"):
        assert name in listing


def test_every_run_is_reachable_as_name_at_id(mount: Mount, catalog: Catalog) -> None:
    runs = mount.path / "runs"
    inode_of_run = {
        run_id: os.stat(runs / name).st_ino for name, run_id in catalog.run_dirs.items()
    }
    for alias, run_id in catalog.aliases.items():
        info = os.stat(runs / alias)
        assert stat.S_ISDIR(info.st_mode)
        assert info.st_ino == inode_of_run[run_id], alias
        assert sorted(os.listdir(runs / alias)) == sorted(CATEGORIES)
    some_id = catalog.run_dirs["sweep"]
    with pytest.raises(FileNotFoundError):
        os.stat(runs / f"demo run@{some_id}")  # an alias needs the run's own name


def test_find_shows_every_directory_and_artifact(mount: Mount, catalog: Catalog) -> None:
    output = run_tool(["find", "runs", "-printf", r"%y %p\n"], cwd=mount.path).stdout.decode()
    found: dict[str, set[str]] = {"d": set(), "f": set()}
    for line in output.splitlines():
        kind, path = line.split(" ", 1)
        found[kind].add(path)
    assert found["f"] == set(catalog.files)
    assert found["d"] == catalog.dirs
    assert "runs/demo run/input/system/mesh.dat" in found["f"]  # nested artifact name
    assert "runs/demo run/code/src" in found["d"]
    assert {f"runs/queued run/{c}" for c in CATEGORIES} <= found["d"]  # a run without artifacts


def test_stat_reports_sizes_times_modes_and_owner(mount: Mount, catalog: Catalog) -> None:
    fmt = r"%n|%F|%a|%u|%g|%s|%h\n"
    output = run_tool(
        ["find", "runs", "-exec", "stat", "--printf", fmt, "{}", "+"], cwd=mount.path
    ).stdout.decode()
    seen = set()
    for line in output.splitlines():
        path, kind, mode, uid, gid, size, links = line.split("|")
        seen.add(path)
        assert (int(uid), int(gid), links) == (os.getuid(), os.getgid(), "1"), line
        if path in catalog.files:
            expected = catalog.files[path]
            assert kind in ("regular file", "regular empty file"), line
            assert mode == "444", line
            assert int(size) == expected.official.stat().st_size, line
        else:
            assert (kind, mode) == ("directory", "555"), line
    assert seen == set(catalog.files) | catalog.dirs
    for path, expected in catalog.files.items():
        info = os.stat(mount.path / path)
        assert info.st_mtime_ns == expected.created_ns, path
        if not expected.record["original_path"]:
            # object artifacts: the server's size is content + 33, the mount shows the content
            assert info.st_size == expected.record["size"] - 33, path
        else:
            assert info.st_size == expected.record["size"], path


def test_ls_la_of_a_category(mount: Mount, catalog: Catalog) -> None:
    directory = mount.path / "runs" / "demo run" / "output"
    output = run_tool(["ls", "-la", "--time-style=+%s", directory]).stdout.decode()
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    rows = {}
    for line in output.splitlines()[1:]:  # skip "total N"
        mode, _links, owner, owner_group, size, mtime, name = line.split(maxsplit=6)
        assert (owner, owner_group) == (user, group), line
        rows[name] = (mode, int(size), int(mtime))
    assert rows["."][0] == rows[".."][0] == "dr-xr-xr-x"
    expected = {
        p.rsplit("/", 1)[1]: f
        for p, f in catalog.files.items()
        if p.startswith("runs/demo run/output/")
    }
    assert set(rows) - {".", ".."} == set(expected)
    for name, file in expected.items():
        assert rows[name] == ("-r--r--r--", len(file.content), file.created_ns // 10**9), name


def test_du_adds_up_apparent_sizes_and_blocks(mount: Mount, catalog: Catalog) -> None:
    output = run_tool(["du", "-ab", "runs"], cwd=mount.path).stdout.decode()
    apparent = {}
    for line in output.splitlines():
        size, path = line.split("\t", 1)
        apparent[path] = size
    for path, file in catalog.files.items():
        assert int(apparent[path]) == file.official.stat().st_size, path
    run_total = sum(
        f.official.stat().st_size
        for p, f in catalog.files.items()
        if p.startswith("runs/demo run/")
    )
    assert int(apparent["runs/demo run"]) == run_total
    # Disk usage comes from st_blocks (ceil(size / 512)), so du -k sees the large artifact.
    large = catalog.file_named(LARGE_NAME)
    kib = run_tool(["du", "-k", large.path], cwd=mount.path).stdout.decode().split()[0]
    assert int(kib) == SEEDED_LARGE_SIZE // 1024
    human = run_tool(["du", "-sh", "runs/demo run"], cwd=mount.path).stdout.decode()
    assert human.startswith(f"{SEEDED_LARGE_SIZE // MIB + 1}M"), human


def parse_getfattr(output: str) -> dict[str, dict[str, str]]:
    """Parse ``getfattr -d`` output into {file: {name: value}}."""
    result: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("# file: "):
            current = result.setdefault(line.removeprefix("# file: "), {})
        elif "=" in line:
            name, value = line.split("=", 1)
            current[name] = json.loads(value)  # getfattr quotes values like JSON strings
    return result


def test_getfattr_shows_artifact_metadata(mount: Mount, catalog: Catalog) -> None:
    paths = sorted(catalog.files)
    output = run_tool(["getfattr", "-d", *paths], cwd=mount.path).stdout.decode()
    attributes = parse_getfattr(output)
    assert set(attributes) == set(paths)
    for path in paths:
        record = catalog.files[path].record
        assert attributes[path] == {
            "user.simvue.id": record["id"],
            "user.simvue.checksum": record["checksum"],
            "user.simvue.mime_type": record["mime_type"],
            "user.simvue.original_path": record["original_path"],
            "user.simvue.run_id": catalog.files[path].run_id,
        }, path
        assert record["checksum"] == catalog.files[path].sha256
    run = next(r for r in catalog.runs if r["id"] == catalog.run_dirs["demo run"])
    run_attributes = parse_getfattr(
        run_tool(["getfattr", "-d", "runs/demo run"], cwd=mount.path).stdout.decode()
    )
    assert (
        run_attributes["runs/demo run"].items()
        >= {
            "user.simvue.id": run["id"],
            "user.simvue.status": run["status"],
            "user.simvue.folder": run["folder"],
            "user.simvue.tags": ",".join(run["tags"]),
        }.items()
    )
    missing = run_tool(
        ["getfattr", "-n", "user.simvue.nope", paths[0]], cwd=mount.path, check=False
    )
    assert missing.returncode != 0
    assert b"No such attribute" in missing.stderr


def test_metadata_operations_download_no_content(
    fresh_mount: Mount, seeded_devserver: DevServer, catalog: Catalog
) -> None:
    seeded_devserver.reset_stats()
    run_tool(["ls", "-laR", "runs"], cwd=fresh_mount.path)
    run_tool(["find", "runs", "-ls"], cwd=fresh_mount.path)
    run_tool(["du", "-ab", "runs"], cwd=fresh_mount.path)
    run_tool(["getfattr", "-R", "-d", "runs"], cwd=fresh_mount.path)
    stats = settled_stats(seeded_devserver)
    # Only object artifacts cost a request (Range: bytes=0-0) to learn their real size.
    objects = sum(1 for f in catalog.files.values() if not f.record["original_path"])
    assert objects > 0
    assert stats["storage_gets"] <= objects
    assert stats["bytes_served"] <= objects


# -- content ------------------------------------------------------------------------------


def test_cat_matches_the_official_client(mount: Mount, catalog: Catalog) -> None:
    for path, file in catalog.files.items():
        content = run_tool(["cat", path], cwd=mount.path).stdout
        assert sha256(content) == file.sha256 == file.record["checksum"], path


def expected_digests(catalog: Catalog, prefix: str = "runs/") -> dict[str, str]:
    return {
        path.removeprefix(prefix): file.sha256
        for path, file in catalog.files.items()
        if path.startswith(prefix)
    }


def test_cp_r_copies_byte_identical_files(mount: Mount, catalog: Catalog, tmp_path: Path) -> None:
    target = tmp_path / "copy"
    run_tool(["cp", "-r", mount.path / "runs", target], timeout=120)
    assert tree_digests(target) == expected_digests(catalog)
    single = tmp_path / "single"
    run_tool(["cp", mount.path / catalog.file_named(LARGE_NAME).path, single])
    assert sha256_file(single) == sha256_file(catalog.single_large)


def test_cp_p_keeps_the_artifact_time(mount: Mount, catalog: Catalog, tmp_path: Path) -> None:
    notes = catalog.file_named("notes.txt")
    copy = tmp_path / "notes.txt"
    run_tool(["cp", "-p", mount.path / notes.path, copy])
    assert copy.read_bytes() == notes.content
    assert copy.stat().st_mtime_ns == notes.created_ns


def test_tar_archives_byte_identical_files(mount: Mount, catalog: Catalog, tmp_path: Path) -> None:
    archive = tmp_path / "runs.tar"
    run_tool(["tar", "cf", archive, "-C", mount.path, "runs"], timeout=120)
    digests = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                digests[member.name] = sha256(extracted.read())
                path = member.name
                assert member.mode & 0o777 == 0o444, path
                assert member.mtime == catalog.files[path].created_ns // 10**9, path
    assert digests == expected_digests(catalog, prefix="")


def test_rsync_a_copies_content_and_times(mount: Mount, catalog: Catalog, tmp_path: Path) -> None:
    target = tmp_path / "rsync"
    run_tool(["rsync", "-a", f"{mount.path / 'runs'}/", f"{target}/"], timeout=120)
    assert tree_digests(target) == expected_digests(catalog)
    for path, file in catalog.files.items():
        copied = target / path.removeprefix("runs/")
        assert copied.stat().st_mtime_ns == file.created_ns, path


def slices_for(size: int) -> list[tuple[int, int]]:
    """Offsets and lengths that cross block boundaries, reach EOF, and start past it."""
    picks = [(0, 4096), (1, 17), (size // 2, 4096), (max(size - 100, 0), 200), (size, 10)]
    if size > 2 * MIB:
        picks += [(MIB - 3, 7), (MIB * 5 + 123, MIB + 7), (size - MIB - 1, MIB + 2)]
    return picks


def expected_slices(content: bytes, picks: list[tuple[int, int]]) -> bytes:
    return b"".join(content[off : off + length] for off, length in picks)


@pytest.mark.parametrize("mode", ["lseek", "pread", "mmap"])
def test_c_program_reads_slices(mount: Mount, catalog: Catalog, seekread: Path, mode: str) -> None:
    large = catalog.file_named(LARGE_NAME)
    picks = slices_for(SEEDED_LARGE_SIZE)
    args = [str(n) for pick in picks for n in pick]
    got = run_tool([seekread, mode, mount.path / large.path, *args]).stdout
    expected = b"".join(
        seed.large_content(off, max(0, min(length, SEEDED_LARGE_SIZE - off)))
        for off, length in picks
    )
    assert got == expected
    for key, name in (("results", "results.csv"), ("spectrum", "spectrum"), ("empty", "empty.log")):
        file = catalog.file_named(name)
        content = seed.artifact_content(key, SEEDED_LARGE_SIZE)
        picks = slices_for(len(content))
        args = [str(n) for pick in picks for n in pick]
        got = run_tool([seekread, mode, mount.path / file.path, *args]).stdout
        assert got == expected_slices(content, picks), name


# -- transfer is lazy and ranged ----------------------------------------------------------


def test_head_of_the_large_artifact_transfers_little(
    fresh_mount: Mount, seeded_devserver: DevServer
) -> None:
    path = fresh_mount.path / "runs" / "demo run" / "output" / LARGE_NAME
    seeded_devserver.reset_stats()
    got = run_tool(["head", "-c", "4096", path]).stdout
    assert got == seed.large_content(0, 4096)
    served = settled_stats(seeded_devserver)["bytes_served"]
    assert 4096 <= served <= SMALL_READ_BUDGET


HALF = SEEDED_LARGE_SIZE // 2


@pytest.mark.parametrize(
    ("offset", "dd_args"),
    [
        (HALF, ["bs=4096", f"skip={HALF // 4096}", "count=1"]),
        (HALF + 12345, ["iflag=skip_bytes", f"skip={HALF + 12345}", "bs=4096", "count=1"]),
        (SEEDED_LARGE_SIZE - 4096, ["bs=4096", f"skip={SEEDED_LARGE_SIZE // 4096 - 1}"]),
    ],
    ids=["middle", "middle-unaligned", "end"],
)
def test_dd_skip_transfers_little(
    fresh_mount: Mount, seeded_devserver: DevServer, offset: int, dd_args: list[str]
) -> None:
    path = fresh_mount.path / "runs" / "demo run" / "output" / LARGE_NAME
    seeded_devserver.reset_stats()
    got = run_tool(["dd", f"if={path}", "status=none", *dd_args]).stdout
    assert got == seed.large_content(offset, 4096)
    served = settled_stats(seeded_devserver)["bytes_served"]
    assert 4096 <= served <= SMALL_READ_BUDGET


# -- concurrency --------------------------------------------------------------------------


def read_whole(path: Path, chunk: int, start: int) -> str:
    """Read *path* in *chunk*-sized preads starting at *start* and wrapping around; sha256."""
    size = os.stat(path).st_size
    pieces: dict[int, bytes] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        offsets = list(range(0, size, chunk))
        first = next((i for i, off in enumerate(offsets) if off >= start), 0)
        for off in offsets[first:] + offsets[:first]:
            pieces[off] = os.pread(fd, chunk, off)
    finally:
        os.close(fd)
    return sha256(b"".join(pieces[off] for off in sorted(pieces)))


def test_sixteen_concurrent_readers(fresh_mount: Mount, catalog: Catalog) -> None:
    small = [
        f for f in catalog.files.values() if f.path.startswith("runs/") and LARGE_NAME not in f.path
    ]
    large = catalog.file_named(LARGE_NAME)
    rng = random.Random(16)
    jobs: list[tuple[ExpectedFile, int, int]] = []
    # 8 readers of the same large artifact, each with its own chunk size and start offset.
    for _ in range(8):
        jobs.append(
            (
                large,
                rng.choice([4096, 65536, 131072, MIB, 3 * MIB + 5]),
                rng.randrange(SEEDED_LARGE_SIZE),
            )
        )
    # 8 readers of different artifacts.
    for file in rng.sample(small, 8):
        jobs.append((file, rng.choice([1, 100, 4096]), 0))
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        futures = {
            pool.submit(read_whole, fresh_mount.path / file.path, chunk, start): file
            for file, chunk, start in jobs
        }
        for future in concurrent.futures.as_completed(futures, timeout=240):
            file = futures[future]
            assert future.result() == file.sha256, file.path


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "runs/no such run",
        "runs/demo run/results",
        "runs/demo run/output/no-such-artifact.txt",
        "runs/demo run/input/system/nothing.dat",
        "runs/sweep@not-a-run-id",
        "nothing-at-the-root",
    ],
)
def test_missing_names_give_enoent(mount: Mount, path: str) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(mount.path / path)
    listed = run_tool(["ls", mount.path / path], check=False)
    assert listed.returncode != 0
    assert b"No such file or directory" in listed.stderr


def test_a_file_is_not_a_directory(mount: Mount) -> None:
    with pytest.raises(NotADirectoryError):
        os.stat(mount.path / "runs" / "demo run" / "input" / "notes.txt" / "x")


WRITE_COMMANDS = {
    "touch an artifact": ["touch", "runs/demo run/input/notes.txt"],
    "touch a new file": ["touch", "runs/demo run/input/new.txt"],
    "mkdir": ["mkdir", "runs/demo run/input/newdir"],
    "mkdir a run": ["mkdir", "runs/new run"],
    "rm": ["rm", "-f", "runs/demo run/input/notes.txt"],
    "rm -r": ["rm", "-rf", "runs/demo run/code/src"],
    "mv": ["mv", "runs/demo run/input/notes.txt", "runs/demo run/input/moved.txt"],
    "redirect >": ["sh", "-c", "echo x > 'runs/demo run/input/notes.txt'"],
    "redirect >>": ["sh", "-c", "echo x >> 'runs/demo run/input/notes.txt'"],
    "redirect new": ["sh", "-c", "echo x > 'runs/demo run/output/new.txt'"],
    "chmod": ["chmod", "u+w", "runs/demo run/input/notes.txt"],
    "chown": ["chown", "0:0", "runs/demo run/input/notes.txt"],
    "truncate": ["truncate", "-s", "0", "runs/demo run/input/notes.txt"],
    "ln -s": ["ln", "-s", "notes.txt", "runs/demo run/input/link"],
    "ln": ["ln", "runs/demo run/input/notes.txt", "runs/demo run/input/hard"],
    "setfattr": ["setfattr", "-n", "user.x", "-v", "1", "runs/demo run/input/notes.txt"],
}


@pytest.mark.parametrize("command", list(WRITE_COMMANDS))
def test_write_commands_fail_with_erofs(mount: Mount, catalog: Catalog, command: str) -> None:
    result = run_tool(WRITE_COMMANDS[command], cwd=mount.path, check=False)
    assert result.returncode != 0, command
    assert b"Read-only file system" in result.stderr, result.stderr
    notes = catalog.file_named("notes.txt")
    assert (mount.path / notes.path).read_bytes() == notes.content
    assert sorted(os.listdir(mount.path / "runs" / "demo run" / "input")) == ["notes.txt", "system"]


def test_write_system_calls_return_erofs(mount: Mount) -> None:
    base = mount.path / "runs" / "demo run" / "input"
    notes = base / "notes.txt"
    calls: dict[str, Callable[[], object]] = {
        "open O_WRONLY": lambda: os.open(notes, os.O_WRONLY),
        "open O_RDWR": lambda: os.open(notes, os.O_RDWR),
        "open O_CREAT": lambda: os.open(base / "new", os.O_WRONLY | os.O_CREAT, 0o644),
        "open O_TRUNC": lambda: os.open(notes, os.O_RDONLY | os.O_TRUNC),
        "mkdir": lambda: os.mkdir(base / "d"),
        "rmdir": lambda: os.rmdir(base / "system"),
        "unlink": lambda: os.unlink(notes),
        "rename": lambda: os.rename(notes, base / "renamed"),
        "chmod": lambda: os.chmod(notes, 0o644),
        "chown": lambda: os.chown(notes, os.getuid(), os.getgid()),
        "utime": lambda: os.utime(notes, (0, 0)),
        "truncate": lambda: os.truncate(notes, 0),
        "symlink": lambda: os.symlink("notes.txt", base / "s"),
        "link": lambda: os.link(notes, base / "h"),
        "setxattr": lambda: os.setxattr(notes, "user.x", b"1"),
        "removexattr": lambda: os.removexattr(notes, "user.simvue.id"),
        "mknod": lambda: os.mknod(base / "fifo", 0o644 | stat.S_IFIFO),
    }
    outcomes: dict[str, str] = {}
    for name, call in calls.items():
        try:
            call()
        except OSError as exc:
            outcomes[name] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        else:
            outcomes[name] = "succeeded"
    assert outcomes == dict.fromkeys(calls, "EROFS")


def errno_name(call: Callable[[], object]) -> str:
    """Return "ok" if *call* succeeds, else the errno name of the OSError it raised."""
    try:
        call()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def test_other_operations_on_a_read_only_file(mount: Mount, catalog: Catalog) -> None:
    notes = catalog.file_named("notes.txt")
    path = mount.path / notes.path
    fd = os.open(path, os.O_RDONLY)
    try:
        assert errno_name(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)) == "ok"
        assert errno_name(lambda: fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)) == "ok"
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        assert os.lseek(fd, 0, os.SEEK_HOLE) == len(notes.content)
        assert errno_name(lambda: os.fsync(fd)) == "ok"
        assert errno_name(lambda: os.posix_fallocate(fd, 0, 10)) == "EBADF"
        writable = mmap.PROT_READ | mmap.PROT_WRITE
        assert errno_name(lambda: mmap.mmap(fd, 0, mmap.MAP_SHARED, writable)) == "EACCES"
        with mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ) as shared:
            assert shared[:] == notes.content
    finally:
        os.close(fd)
    assert os.access(path, os.R_OK)
    assert not os.access(path, os.W_OK)
    assert errno_name(lambda: os.readlink(path)) == "EINVAL"
    assert errno_name(lambda: os.getxattr(path, "security.selinux")) == "ENODATA"
    assert errno_name(lambda: os.stat(path.parent / ("x" * 256))) == "ENAMETOOLONG"


def test_mv_out_of_the_mount_copies_but_keeps_the_original(
    mount: Mount, catalog: Catalog, tmp_path: Path
) -> None:
    notes = catalog.file_named("notes.txt")
    result = run_tool(["mv", mount.path / notes.path, tmp_path], check=False)
    assert result.returncode == 1
    assert b"Read-only file system" in result.stderr
    assert (tmp_path / "notes.txt").read_bytes() == notes.content
    assert (mount.path / notes.path).read_bytes() == notes.content


def test_storage_ignoring_range_still_gives_correct_bytes(
    fresh_mount: Mount, seeded_devserver: DevServer, catalog: Catalog, seekread: Path
) -> None:
    large = catalog.file_named(LARGE_NAME)
    picks = [(SEEDED_LARGE_SIZE // 3, 5000), (7, 9), (SEEDED_LARGE_SIZE - 10, 10)]
    seeded_devserver.set_faults(ignore_range=True)
    try:
        args = [str(n) for pick in picks for n in pick]
        got = run_tool([seekread, "pread", fresh_mount.path / large.path, *args]).stdout
    finally:
        seeded_devserver.clear_faults()
    assert got == b"".join(seed.large_content(off, length) for off, length in picks)


def test_storage_error_gives_eio_and_the_mount_survives(
    fresh_mount: Mount, seeded_devserver: DevServer, catalog: Catalog
) -> None:
    file = catalog.file_named("results.csv")
    path = fresh_mount.path / file.path
    seeded_devserver.set_faults(storage_error_status=500, storage_error_rate=1.0)
    try:
        result = run_tool(["cat", path], check=False, timeout=REQUEST_TIMEOUT + DEADLINE_SLACK)
        assert result.returncode != 0
        assert b"Input/output error" in result.stderr, result.stderr
        with pytest.raises(OSError, match="Input/output error") as caught:
            (fresh_mount.path / catalog.file_named("notes.txt").path).read_bytes()
        assert caught.value.errno == errno.EIO
        # Metadata still works while storage fails.
        listed = run_tool(["ls", fresh_mount.path / "runs"]).stdout.decode().splitlines()
        assert "demo run" in listed
    finally:
        seeded_devserver.clear_faults()
    # Errors are not cached: the same file reads correctly once storage recovers.
    assert run_tool(["cat", path]).stdout == file.content
    assert is_mounted(fresh_mount.path)


def test_stalled_storage_times_out_and_the_mount_survives(
    fresh_mount: Mount, seeded_devserver: DevServer, catalog: Catalog
) -> None:
    file = catalog.file_named("scan.log", run_dir="scan:2025-03")
    path = fresh_mount.path / file.path
    # Longer than the read timeout (10 s) so every attempt stalls; short enough that the
    # server's stalled handlers end soon after the test.
    seeded_devserver.reset_stats()
    seeded_devserver.set_faults(stall_seconds=12.0, stall_where="storage_before")
    try:
        # O_DIRECT: exactly one FUSE read (a buffered read would be retried by the kernel).
        result = run_tool(
            ["dd", f"if={path}", "iflag=direct", "bs=4096", "count=1", "status=none"],
            check=False,
            timeout=REQUEST_TIMEOUT + DEADLINE_SLACK,
        )
    finally:
        seeded_devserver.clear_faults()
    assert result.returncode != 0
    assert b"Connection timed out" in result.stderr, result.stderr
    # The silent request was abandoned after the read timeout and tried again.
    assert seeded_devserver.stats()["faults_injected"]["stall"] >= 2
    assert "demo run" in os.listdir(fresh_mount.path / "runs")
    assert run_tool(["cat", path]).stdout == file.content


# -- consistency: what listings show when runs change -------------------------------------

# The default metadata TTL ("minimal") is 1 s; allow for a loaded machine.
TTL_SLACK = 5.0


def xattr_id(path: Path) -> str:
    return os.getxattr(path, "user.simvue.id").decode()


def test_listings_follow_run_changes_within_the_ttl(devserver: DevServer, tmp_path: Path) -> None:
    with mounted(devserver, tmp_path) as own:
        runs = own.path / "runs"
        assert os.listdir(runs) == []
        older = new_run(devserver, "alpha")
        assert wait_until(lambda: os.listdir(runs) == ["alpha"], TTL_SLACK)
        assert xattr_id(runs / "alpha") == older
        # A new artifact attached to the run appears in its category directory.
        output = runs / "alpha" / "output"
        assert os.listdir(output) == []
        store_artifact(devserver, older, "late.txt", b"attached later\n")
        assert wait_until(lambda: os.listdir(output) == ["late.txt"], TTL_SLACK)
        assert (output / "late.txt").read_bytes() == b"attached later\n"
        # A newer run with the same name takes the plain name; the older one is renamed.
        newer = new_run(devserver, "alpha")
        expected = sorted(["alpha", f"alpha@{older}"])
        assert wait_until(lambda: sorted(os.listdir(runs)) == expected, TTL_SLACK)
        assert wait_until(lambda: xattr_id(runs / "alpha") == newer, TTL_SLACK)
        assert xattr_id(runs / f"alpha@{older}") == older
        assert xattr_id(runs / f"alpha@{newer}") == newer  # reachable, though not listed
        # Deleting the newer run gives the plain name back to the older one.
        devserver.api("DELETE", f"/runs/{newer}").raise_for_status()
        assert wait_until(lambda: os.listdir(runs) == ["alpha"], TTL_SLACK)
        assert wait_until(lambda: xattr_id(runs / "alpha") == older, TTL_SLACK)
        assert wait_until(lambda: not (runs / f"alpha@{newer}").exists(), TTL_SLACK)


def test_indefinite_ttl_keeps_the_first_listing(devserver: DevServer, tmp_path: Path) -> None:
    new_run(devserver, "first")
    with mounted(devserver, tmp_path, "--metadata-ttl", "indefinite") as own:
        runs = own.path / "runs"
        assert os.listdir(runs) == ["first"]
        new_run(devserver, "second")
        time.sleep(TTL_SLACK / 2)
        assert os.listdir(runs) == ["first"]


# -- mounting and unmounting --------------------------------------------------------------


def test_unmount_command_leaves_nothing_behind(seeded_devserver: DevServer, tmp_path: Path) -> None:
    with mounted(seeded_devserver, tmp_path) as own:
        assert "demo run" in os.listdir(own.path / "runs")
        run_tool([sys.executable, "-m", "simvuefs", "unmount", own.path])
        assert not is_mounted(own.path)
        assert wait_until(lambda: not daemon_pids(own.path), 10.0)
        assert os.listdir(own.path) == []  # the empty directory underneath


def test_busy_mount_is_detached_lazily(seeded_devserver: DevServer, tmp_path: Path) -> None:
    with mounted(seeded_devserver, tmp_path) as own:
        holder = subprocess.Popen(["sleep", "60"], cwd=own.path / "runs" / "demo run")
        try:
            result = run_tool([sys.executable, "-m", "simvuefs", "unmount", own.path])
            assert b"busy" in result.stderr
            assert not is_mounted(own.path)
        finally:
            holder.send_signal(signal.SIGTERM)
            holder.wait(10)
        assert wait_until(lambda: not daemon_pids(own.path), 10.0)


def test_foreground_mount_stops_cleanly_on_sigterm(
    seeded_devserver: DevServer, tmp_path: Path
) -> None:
    with mounted(seeded_devserver, tmp_path, foreground=True) as own:
        assert own.process is not None
        assert "demo run" in os.listdir(own.path / "runs")
        own.process.send_signal(signal.SIGTERM)
        assert own.process.wait(10) == 0
        assert not is_mounted(own.path)

"""Acceptance tests of the content cache on disk (``--cache-dir``): real mounts, real tools.

Storage transfer is the devserver's own count (``bytes_served``), exact. Files are 32 MiB
(8 cells of the cache's grid) where the issue says 256 MiB: no property checked here
depends on the size, and each test stays a few seconds. The concurrent-readers test uses
64 MiB so that its 1.25x bound is several cells wide. Each test has its own devserver, its
own cache directory and private XDG directories, so nothing carries over between tests.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import zlib
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from control_util import run_cli, state_dirs
from helpers import new_run, sha256, sha256_file, store_artifact

from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted, unmount
from testbed.processes import run_tool, wait_until

MIB = 1024 * 1024
CELL = 4 * MIB
SIZE = 32 * MIB


def settled(server: DevServer) -> int:
    """The storage bytes served, once read-ahead has stopped moving them."""
    previous = server.stats()["bytes_served"]
    for _ in range(40):
        wait_until(lambda: False, 0.3)
        current = server.stats()["bytes_served"]
        if current == previous:
            return int(current)
        previous = current
    return int(previous)


def parts(cache: Path) -> list[Path]:
    """Every part file in *cache* (``<start>-<length>-<crc>``)."""
    return [p for p in cache.glob("v1/*/*/*") if p.name.count("-") == 2 and "." not in p.name]


def check_parts(cache: Path) -> None:
    """Every part holds exactly the bytes its name promises."""
    for part in parts(cache):
        _start, length, crc = part.name.split("-")
        data = part.read_bytes()
        assert len(data) == int(length), part
        assert zlib.crc32(data) == int(crc, 16), part


def cache_size(cache: Path) -> int:
    return sum(p.stat().st_size for p in parts(cache))


@pytest.fixture
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return state_dirs(tmp_path, monkeypatch)


@pytest.fixture
def content(devserver: DevServer, private_state: dict[str, str]) -> dict[str, bytes]:
    """Runs "a" (``big.bin``, ``other.bin``) and "b" (``copy.bin``: big's content)."""
    rng = random.Random(16)
    big, other = rng.randbytes(SIZE), rng.randbytes(SIZE)
    first, second = new_run(devserver, "a"), new_run(devserver, "b")
    store_artifact(devserver, first, "big.bin", big)
    store_artifact(devserver, first, "other.bin", other)
    store_artifact(devserver, second, "copy.bin", big)
    return {"a/output/big.bin": big, "a/output/other.bin": other, "b/output/copy.bin": big}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "content"


def mount_with(
    server: DevServer, workdir: Path, cache: Path, *extra: str
) -> AbstractContextManager[Mount]:
    workdir.mkdir(exist_ok=True)
    return mounted(server, workdir, "--cache-dir", str(cache), *extra)


def sealed_reads_shown(cache: Path) -> bool:
    """True once ``simvuefs cache`` shows a mount's reads from sealed parts."""
    shown = run_cli("cache", "--cache-dir", str(cache))
    return re.search(rb"sealed_reads [1-9]", shown.stdout) is not None


def head(path: Path, size: int) -> bytes:
    return run_tool(["head", "-c", str(size), str(path)]).stdout


def test_remount_copies_writes_and_heads_read_nothing_again(
    devserver: DevServer, content: dict[str, bytes], cache: Path, tmp_path: Path
) -> None:
    written = random.Random(3).randbytes(5 * MIB + 17)
    source = tmp_path / "written.bin"
    source.write_bytes(written)
    with mount_with(devserver, tmp_path / "one", cache) as mount:
        runs = mount.path / "runs"
        devserver.reset_stats()
        assert sha256_file(runs / "a/output/big.bin") == sha256(content["a/output/big.bin"])
        assert head(runs / "a/output/other.bin", 4096) == content["a/output/other.bin"][:4096]
        run_tool(["cp", str(source), str(runs / "a/input/written.bin")])
        first = settled(devserver)
        # The file's first reads, before they are known to be sequential, are fetched exactly
        # (not cached) and their blocks may be fetched again by the stream: at most the
        # kernel's read-ahead ramp (2 MiB); the head moves little. Seen in CI: 2 MiB + 16 KiB.
        assert SIZE <= first <= SIZE + 4 * MIB, devserver.stats()
        shown = run_cli("cache", "--cache-dir", str(cache))
        assert shown.returncode == 0, shown.stderr
        assert str(mount.path) in shown.stdout.decode()
    # The file read through was checked against its sha256: its parts are sealed, so the
    # next mount reads them without hashing the whole file again. The head is not sealed.
    assert len(list(cache.glob(f"v1/*/{sha256(content['a/output/big.bin'])}/sealed"))) == 1
    # A head caches about what it read, not the file.
    other = sha256(content["a/output/other.bin"])
    assert not list(cache.glob(f"v1/*/{other}/sealed"))
    assert 0 < sum(p.stat().st_size for p in cache.glob(f"v1/*/{other}/*-*-*")) <= 2 * MIB
    check_parts(cache)
    with mount_with(devserver, tmp_path / "two", cache) as mount:
        runs = mount.path / "runs"
        devserver.reset_stats()
        assert sha256_file(runs / "a/output/big.bin") == sha256(content["a/output/big.bin"])
        assert sha256_file(runs / "b/output/copy.bin") == sha256(content["b/output/copy.bin"])
        assert head(runs / "a/output/other.bin", 4096) == content["a/output/other.bin"][:4096]
        assert (runs / "a/input/written.bin").read_bytes() == written
        assert settled(devserver) == 0
        assert wait_until(lambda: sealed_reads_shown(cache), 10)  # published every 2 s


def test_a_damaged_part_is_refetched_and_a_killed_filler_leaves_no_partial_part(
    devserver: DevServer, content: dict[str, bytes], cache: Path, tmp_path: Path
) -> None:
    big = content["a/output/big.bin"]
    with mount_with(devserver, tmp_path / "one", cache) as mount:
        assert sha256_file(mount.path / "runs/a/output/big.bin") == sha256(big)
    victim = sorted(parts(cache))[3]
    damaged = victim.stat().st_size
    with open(victim, "r+b") as file:  # bit rot: one byte flipped in place
        file.seek(1000)
        byte = file.read(1)
        file.seek(1000)
        file.write(bytes([byte[0] ^ 0x40]))
    with mount_with(devserver, tmp_path / "two", cache) as mount:
        devserver.reset_stats()
        assert sha256_file(mount.path / "runs/a/output/big.bin") == sha256(big)
        assert settled(devserver) == damaged  # the damaged part alone came again
    check_parts(cache)

    # kill -9 while the daemon fills the cache with other.bin: what it left is never used
    other = content["a/output/other.bin"]
    with mount_with(devserver, tmp_path / "three", cache, "--read-ahead", "4MiB") as mount:
        reader = subprocess.Popen(
            [sys.executable, "-c", HALF_READER, str(mount.path / "runs/a/output/other.bin")],
            stdout=subprocess.PIPE,
        )
        assert reader.stdout is not None
        assert reader.stdout.readline() == b"half\n"
        os.kill(mount.pid, signal.SIGKILL)
        reader.kill()
        reader.wait(30)
        unmount(mount.path)
    entry = list(cache.glob(f"v1/*/{sha256(other)}/*-*-*"))
    assert 0 < sum(p.stat().st_size for p in entry) < SIZE  # killed while filling
    check_parts(cache)
    with mount_with(devserver, tmp_path / "four", cache) as mount:
        assert (mount.path / "runs/a/output/other.bin").read_bytes() == other
    check_parts(cache)


def test_content_failing_its_sha256_is_dropped_from_the_cache(
    devserver: DevServer, content: dict[str, bytes], cache: Path, tmp_path: Path
) -> None:
    """Storage sends one wrong byte: the parts pass their CRC (written from what came) but
    the whole file fails its SHA-256, so the read fails with EIO and the parts go; once
    storage is sound the next read fetches the content again and succeeds."""
    big = content["a/output/big.bin"]
    devserver.set_faults(corrupt_content=True, corrupt_offset=SIZE // 2 + 12345)
    with mount_with(devserver, tmp_path / "one", cache) as mount:
        path = mount.path / "runs/a/output/big.bin"
        failed = run_tool(["cat", str(path)], check=False)
        assert failed.returncode != 0
        assert b"Input/output error" in failed.stderr
        devserver.clear_faults()
        devserver.reset_stats()
        assert sha256_file(path) == sha256(big)
        assert settled(devserver) >= SIZE // 2  # fetched again, not read from the cache
        assert sha256_file(path) == sha256(big)
    check_parts(cache)
    with mount_with(devserver, tmp_path / "two", cache) as mount:
        devserver.reset_stats()
        assert sha256_file(mount.path / "runs/a/output/big.bin") == sha256(big)
        assert settled(devserver) == 0


HALF_READER = """
import sys, time
with open(sys.argv[1], "rb") as file:
    for _ in range(12):
        file.read(1024 * 1024)
    print("half", flush=True)
    time.sleep(60)
"""


def test_two_daemons_sharing_a_cache_fetch_a_file_once(
    devserver: DevServer, private_state: dict[str, str], cache: Path, tmp_path: Path
) -> None:
    size = 64 * MIB
    data = random.Random(8).randbytes(size)
    store_artifact(devserver, new_run(devserver, "shared"), "mesh.bin", data)
    expected = sha256(data)
    with (
        mount_with(devserver, tmp_path / "one", cache, "--read-only") as one,
        mount_with(devserver, tmp_path / "two", cache, "--read-only") as two,
    ):
        devserver.reset_stats()
        digests: list[str] = []
        paths = [m.path / "runs/shared/output/mesh.bin" for m in (one, two) for _ in range(4)]
        threads = [
            threading.Thread(target=lambda p=p: digests.append(sha256_file(p))) for p in paths
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert digests == [expected] * 8
        # Without sharing, two daemons with four readers each move about 3.2x the file
        # (measured: 204 MiB for 64 MiB); sharing one cache: 1.0-1.03x (the four readers of
        # a mount make exact reads, which wait for claims and follow this process's streams).
        assert settled(devserver) <= size * 5 // 4


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_or_read_only_cache_still_reads(
    devserver: DevServer, content: dict[str, bytes], tmp_path: Path
) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    run_tool(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(tiny)])
    try:
        with mount_with(devserver, tmp_path / "one", tiny) as mount:
            runs = mount.path / "runs"
            for name in ("a/output/big.bin", "a/output/other.bin"):
                assert (runs / name).read_bytes() == content[name]
        assert "not writable\n" not in mount.log_file.read_text()
        assert mount.log_file.read_text().count("cannot write to the content cache") == 1
        check_parts(tiny)
        cached = cache_size(tiny)
        assert cached > 0
        run_tool(["mount", "-o", "remount,ro", str(tiny)])
        with mount_with(devserver, tmp_path / "two", tiny) as mount:
            devserver.reset_stats()
            runs = mount.path / "runs"
            for name in ("a/output/big.bin", "a/output/other.bin"):
                assert (runs / name).read_bytes() == content[name]
            assert settled(devserver) == 2 * SIZE - cached
        assert mount.log_file.read_text().count("is read-only") == 1
    finally:
        unmount(tiny)


def test_eviction_while_another_mount_reads_keeps_the_size_bounded(
    devserver: DevServer, content: dict[str, bytes], cache: Path, tmp_path: Path
) -> None:
    limit = 40 * MIB
    names = ("a/output/big.bin", "a/output/other.bin")
    with (
        mount_with(devserver, tmp_path / "one", cache, "--cache-dir-size", "40MiB") as one,
        mount_with(devserver, tmp_path / "two", cache, "--cache-dir-size", "40MiB") as two,
    ):
        failures: list[str] = []

        def read(root: Path, name: str) -> None:
            if (root / "runs" / name).read_bytes() != content[name]:
                failures.append(name)

        threads = [
            threading.Thread(target=read, args=(one.path, names[0])),
            threading.Thread(target=read, args=(two.path, names[1])),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert failures == []
        settled(devserver)
    assert cache_size(cache) <= limit
    cleaned = run_cli("cache", "clean", "--cache-dir", str(cache), "--max-size", "0")
    assert cleaned.returncode == 0, cleaned.stderr
    assert cache_size(cache) == 0

"""Memory caps: ``--cache-size``, ``--read-ahead``, ``--read-ahead-total`` (and ``-o``).

The caps are computed by ``config.memory_caps`` (pure, tested directly), reach the daemon's
Settings through ``simvuefs mount`` (and ``mount.simvuefs -o``, ``simvuefs.mounted``), and a
mount with small caps still reads a large artifact byte for byte while its published
counters (``simvuefs status``'s stats file) stay inside them.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from devserver_util import SEEDED_LARGE_SIZE
from helpers import settings_for

import simvuefs
from simvuefs.config import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_READ_PART_SIZE,
    DEFAULT_READ_STREAMS,
    DEFAULT_READAHEAD_PER_FILE,
    DEFAULT_READAHEAD_TOTAL,
    MIB,
    memory_caps,
)
from simvuefs.control import counters
from simvuefs.control.mounthelper import option_flags
from simvuefs.devserver.seed import large_content
from simvuefs.errors import ConfigError
from testbed.mounts import mounted

CACHE, PER_FILE, TOTAL = DEFAULT_CACHE_BYTES, DEFAULT_READAHEAD_PER_FILE, DEFAULT_READAHEAD_TOTAL


def caps(
    cache: int, per_file: int, total: int, part: int = 4 * MIB, streams: int = DEFAULT_READ_STREAMS
) -> dict[str, int]:
    return {
        "cache_bytes": cache,
        "readahead_per_file": per_file,
        "readahead_total": total,
        "read_part_size": part,
        "read_streams": streams,
    }


def test_defaults_are_the_settings_defaults() -> None:
    settings = settings_for()
    assert memory_caps() == caps(
        settings.cache_bytes,
        settings.readahead_per_file,
        settings.readahead_total,
        settings.read_part_size,
        settings.read_streams,
    )
    assert memory_caps() == caps(
        DEFAULT_CACHE_BYTES,
        DEFAULT_READAHEAD_PER_FILE,
        DEFAULT_READAHEAD_TOTAL,
        DEFAULT_READ_PART_SIZE,
        DEFAULT_READ_STREAMS,
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # The cache and the read-ahead are independent (read-ahead blocks are pinned).
        ({"cache_size": 64 * MIB}, caps(64 * MIB, PER_FILE, TOTAL)),
        ({"cache_size": 8 * MIB}, caps(8 * MIB, PER_FILE, TOTAL)),
        ({"read_ahead_total": 16 * MIB}, caps(CACHE, 16 * MIB, 16 * MIB)),
        ({"read_ahead": 8 * MIB}, caps(CACHE, 8 * MIB, TOTAL)),
        ({"read_ahead": 200 * MIB}, caps(CACHE, 200 * MIB, 200 * MIB)),
        (
            {"read_ahead": 100 * MIB, "cache_size": 1024 * MIB},
            caps(1024 * MIB, 100 * MIB, max(100 * MIB, TOTAL)),
        ),
        (
            {"cache_size": 16 * MIB, "read_ahead_total": 64 * MIB},
            caps(16 * MIB, min(PER_FILE, 64 * MIB), 64 * MIB),
        ),
        (
            {"cache_size": 16 * MIB, "read_ahead": 2 * MIB, "read_ahead_total": 8 * MIB},
            caps(16 * MIB, 2 * MIB, 8 * MIB, part=2 * MIB),
        ),
        (
            {"read_part_size": 8 * MIB, "read_streams": 8},
            caps(CACHE, PER_FILE, TOTAL, part=8 * MIB, streams=8),
        ),
    ],
)
def test_caps_not_given_follow_the_given_ones(given: dict[str, int], expected: dict[str, int]):
    result = memory_caps(**given, block_size=MIB)
    assert result == expected
    assert MIB <= result["read_part_size"] <= result["readahead_per_file"]
    assert result["readahead_per_file"] <= result["readahead_total"]
    assert result["cache_bytes"] >= 2 * MIB


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cache_size": MIB}, "--cache-size 1 MiB is less than 2 MiB"),
        ({"read_ahead": 4096}, "--read-ahead 4 KiB is less than 1 MiB"),
        ({"read_ahead_total": 0}, "--read-ahead-total 0 bytes is less than 1 MiB"),
        (
            {"read_ahead": 64 * MIB, "read_ahead_total": 32 * MIB},
            "--read-ahead 64 MiB is more than --read-ahead-total 32 MiB",
        ),
        (
            {"read_ahead": 200 * MIB, "read_ahead_total": 100 * MIB},
            "--read-ahead 200 MiB is more than --read-ahead-total 100 MiB",
        ),
        ({"read_part_size": 4096}, "--read-part-size 4 KiB is less than 1 MiB"),
        (
            {"read_ahead": 4 * MIB, "read_part_size": 8 * MIB},
            "--read-part-size 8 MiB is more than --read-ahead 4 MiB",
        ),
        ({"read_streams": 0}, "--read-streams 0 is not between 1 and 64"),
        ({"read_streams": 65}, "--read-streams 65 is not between 1 and 64"),
    ],
)
def test_inconsistent_caps_are_refused(given: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        memory_caps(**given, block_size=MIB)


def test_mount_options_become_flags() -> None:
    flags = option_flags(
        "ro,cache_size=64MiB,read_ahead=8M,read_ahead_total=16MiB,read_part_size=4M,read_streams=4"
    )
    assert flags == [
        "--read-only",
        "--cache-size",
        "64MiB",
        "--read-ahead",
        "8M",
        "--read-ahead-total",
        "16MiB",
        "--read-part-size",
        "4M",
        "--read-streams",
        "4",
    ]


def _published(mountpoint: Path, reads: int) -> dict:
    """The mount's stats file once it counts at least *reads* reads (published every 2 s)."""
    deadline = time.monotonic() + 15
    while True:
        data = counters.load(mountpoint)
        if data is not None and data["reader"]["reads"] >= reads:
            return data
        assert time.monotonic() < deadline, f"no stats with {reads} reads for {mountpoint}"
        time.sleep(0.2)


def test_small_caps_read_a_large_file_correctly_within_them(
    seeded_devserver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the daemon's and ours
    cache, per_file, total = 6 * MIB, 2 * MIB, 3 * MIB
    flags = ["--cache-size", "6MiB", "--read-ahead", "2MiB", "--read-ahead-total", "3MiB"]
    flags += ["--read-part-size", "1MiB", "--read-streams", "2"]
    with mounted(seeded_devserver, tmp_path, *flags) as mount:
        large = mount.path / "runs" / "demo run" / "output" / "large.bin"
        digest = hashlib.sha256()
        with large.open("rb", buffering=0) as stream:
            for chunk in iter(lambda: stream.read(MIB), b""):
                digest.update(chunk)
            # And random reads (blocks fetched for them stay in the cache).
            for offset in range(0, SEEDED_LARGE_SIZE, 5 * MIB + 12345):
                assert os.pread(stream.fileno(), 70000, offset) == large_content(offset, 70000)
        assert digest.hexdigest() == hashlib.sha256(large_content(0, SEEDED_LARGE_SIZE)).hexdigest()
        reader = _published(mount.path, reads=SEEDED_LARGE_SIZE // MIB)["reader"]
    assert reader["cache"]["max_bytes"] == cache  # the flag reached the daemon
    assert 0 < reader["cache"]["peak_bytes"] <= cache
    assert 0 < reader["readahead_peak_per_handle"] <= per_file  # read-ahead did happen
    assert reader["readahead_peak"] <= total
    assert reader["parts_started"] > 0  # read-ahead fetched parts
    assert 0 < reader["parts_in_flight_peak"] <= 2 + 1  # --read-streams, and one draining


def test_python_api_passes_the_caps(
    seeded_devserver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    options = {"config": seeded_devserver.config_path, "log_file": tmp_path / "mount.log"}
    refused = pytest.raises(simvuefs.MountError, match="--read-ahead 1 KiB is less than ")
    with refused, simvuefs.mounted(mountpoint, read_ahead="1K", **options):
        pass
    with simvuefs.mounted(mountpoint, cache_size="8MiB", **options) as root:
        notes = root / "runs" / "demo run" / "input" / "notes.txt"
        assert notes.read_bytes() == b"Demo run notes.\nSecond line.\n"
        reader = _published(root, reads=1)["reader"]
    assert reader["cache"]["max_bytes"] == 8 * MIB

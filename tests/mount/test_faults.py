"""Fault injection through a real mount: the promises of docs/reliability.md, kept.

A devserver is mounted with the real CLI and its fault switches are turned on: retries and
resumed downloads give exact bytes, a stalled server costs one request its deadline while the
rest of the mount keeps answering, expired URLs are refreshed, corrupted content gives EIO
instead of wrong bytes, a refused token gives EACCES and recovers, and a killed daemon leaves
a mount that ``simvuefs unmount`` clears. The switches themselves are checked over plain HTTP
in ``tests/server/test_fault_switches.py``; the reader's verification and the client's token
reload without a server in ``tests/unit``.

Every server here is private to its test (``devserver``), so switches never leak into other
tests.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import new_run, sha256, store_artifact

from testbed.devserver import DevServer
from testbed.mounts import (
    Mount,
    config_file_of,
    daemon_pids,
    is_mounted,
    mount_command,
    mounted,
    unmount,
)
from testbed.processes import run_tool, wait_until

MIB = 1024 * 1024

# What the mount must survive in one test; the daemon's log must never show an exception
# that reached the error boundary unplanned.
UNEXPECTED = ("failed unexpectedly", "Traceback")


@dataclass(frozen=True)
class Served:
    """A devserver with one run "faulty" holding a few artifacts of known content."""

    server: DevServer
    run_id: str
    files: dict[str, bytes]

    def path(self, mount: Mount, name: str) -> Path:
        return mount.path / "runs" / "faulty" / "output" / name


@pytest.fixture
def served(devserver: DevServer) -> Served:
    rng = random.Random(11)
    files = {
        "big.bin": b"".join(rng.randbytes(MIB) for _ in range(24)),
        "other.bin": rng.randbytes(3 * MIB + 17),
        "small.txt": b"".join(b"line %d\n" % i for i in range(20_000)),
    }
    run_id = new_run(devserver, "faulty")
    for name, content in files.items():
        store_artifact(devserver, run_id, name, content)
    return Served(devserver, run_id, files)


def cat(path: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    return run_tool(["cat", path], check=False, timeout=timeout)


def assert_clean_log(mount: Mount) -> None:
    text = mount.log_file.read_text(errors="replace")
    for marker in UNEXPECTED:
        assert marker not in text, mount.log_tail()


def test_transient_errors_and_dropped_downloads_still_give_exact_bytes(
    served: Served, tmp_path: Path
) -> None:
    server = served.server
    with mounted(server, tmp_path) as mount:
        assert sorted(os.listdir(served.path(mount, ""))) == sorted(served.files)
        server.reset_stats()
        server.set_faults(
            api_error_status=503,
            api_error_rate=0.2,
            storage_error_status=503,
            storage_error_count=1,  # the first storage request fails for sure, then at random
            storage_error_rate=0.2,
            drop_after_bytes=3 * MIB,
        )
        for name, content in served.files.items():
            result = cat(served.path(mount, name))
            assert result.returncode == 0, (name, result.stderr, mount.log_tail())
            assert sha256(result.stdout) == sha256(content), name
        stats = server.stats()
        injected = stats["faults_injected"]
        assert injected["drop_after_bytes"] >= 3  # 24 MiB, no body longer than 3 MiB
        assert injected.get("storage_error", 0) >= 1
        # Resumed from the last byte received, not started over: little is fetched twice.
        total = sum(len(content) for content in served.files.values())
        assert stats["bytes_served"] < 1.5 * total, stats["bytes_served"]
        assert_clean_log(mount)


def test_expired_download_urls_are_refreshed(served: Served, tmp_path: Path) -> None:
    server = served.server
    server.set_faults(url_expiry=1.0)  # every URL the mount is given dies after a second
    with mounted(server, tmp_path, "--metadata-ttl", "indefinite") as mount:
        assert sorted(os.listdir(served.path(mount, ""))) == sorted(served.files)
        time.sleep(2.2)  # expiry times are whole seconds, rounded up: at most 2 s from now
        server.reset_stats()
        for name, content in served.files.items():
            assert run_tool(["cat", served.path(mount, name)]).stdout == content
        refreshes = server.stats()["api_requests"].get("GET /api/artifacts/{artifact_id}", 0)
        assert refreshes >= len(served.files)
        assert_clean_log(mount)


def test_corrupted_content_gives_eio_never_wrong_bytes(served: Served, tmp_path: Path) -> None:
    server = served.server
    content = served.files["big.bin"]
    server.set_faults(corrupt_content=True, corrupt_offset=len(content) // 2)
    with mounted(server, tmp_path) as mount:
        path = served.path(mount, "big.bin")
        result = cat(path)
        assert result.returncode != 0
        assert b"Input/output error" in result.stderr
        assert len(result.stdout) < len(content)  # the last read never returns its bytes
        log = mount.log_file.read_text(errors="replace")
        assert "does not match its sha256" in log
        # Other files are unaffected; once storage is sound the same file reads correctly
        # (the kernel's cached pages of the bad read are dropped at the next open).
        assert (
            run_tool(["cat", served.path(mount, "small.txt")]).stdout == served.files["small.txt"]
        )
        server.clear_faults()
        assert sha256(run_tool(["cat", path]).stdout) == sha256(content)
        assert sha256(run_tool(["cat", path]).stdout) == sha256(content)
        assert_clean_log(mount)


def test_no_verify_mount_skips_the_sha256_check(served: Served, tmp_path: Path) -> None:
    """--no-verify (daemonised, so the flag also survives the hand-over to the daemon): the
    corrupted byte reaches the reader, nothing is hashed, and the log says nothing."""
    server = served.server
    content = served.files["big.bin"]
    server.set_faults(corrupt_content=True, corrupt_offset=len(content) // 2)
    with mounted(server, tmp_path, "--no-verify") as mount:
        result = cat(served.path(mount, "big.bin"))
        assert result.returncode == 0, (result.stderr, mount.log_tail())
        assert len(result.stdout) == len(content)
        differing = [
            i for i, (a, b) in enumerate(zip(result.stdout, content, strict=True)) if a != b
        ]
        assert differing == [len(content) // 2]
        assert "sha256" not in mount.log_file.read_text(errors="replace")


@pytest.mark.parametrize("kind", ["truncated", "not_json", "wrong_types"])
def test_malformed_api_answers_never_take_the_mount_down(
    served: Served, tmp_path: Path, kind: str
) -> None:
    server = served.server
    with mounted(server, tmp_path) as mount:
        runs = mount.path / "runs"
        small = served.path(mount, "small.txt")
        assert small.read_bytes() == served.files["small.txt"]
        server.set_faults(malformed_json_rate=1.0, malformed_json_kind=kind)
        time.sleep(1.2)  # the metadata TTL ("minimal", 1 s): listings are asked for again
        listing = run_tool(["ls", runs], check=False)
        if kind == "wrong_types":  # well-formed JSON with unusable entries: skipped, warned
            assert listing.returncode == 0
            assert listing.stdout == b""
        else:
            assert b"Input/output error" in listing.stderr
        server.clear_faults()
        time.sleep(1.2)
        assert os.listdir(runs) == ["faulty"]
        assert small.read_bytes() == served.files["small.txt"]
        log = mount.log_file.read_text(errors="replace")
        expected = "malformed entry" if kind == "wrong_types" else "not valid JSON"
        assert expected in log
        assert_clean_log(mount)


def test_kill_9_leaves_a_dead_mount_that_unmount_clears(served: Served, tmp_path: Path) -> None:
    with mounted(served.server, tmp_path) as mount:
        assert os.listdir(mount.path / "runs") == ["faulty"]
        os.kill(mount.pid, signal.SIGKILL)
        assert wait_until(lambda: not daemon_pids(mount.path), 10.0)
        # The kernel answers ECONNABORTED or ENOTCONN ("transport endpoint is not connected").
        with pytest.raises(OSError, match="connect") as caught:
            os.listdir(mount.path)
        assert caught.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        unmounted = run_tool([sys.executable, "-m", "simvuefs", "unmount", mount.path])
        assert unmounted.stderr == b""
        assert not is_mounted(mount.path)
        mountpoint = mount.path
    # A new mount at the same place works.
    log_file = tmp_path / "again.log"
    argv = mount_command(config_file_of(served.server), mountpoint, log_file)
    try:
        run_tool(argv, timeout=60)
        content = run_tool(["cat", served.path(mount, "small.txt")]).stdout
        assert content == served.files["small.txt"]
    finally:
        unmount(mountpoint)
        assert wait_until(lambda: not daemon_pids(mountpoint), 10.0)
    assert not is_mounted(mountpoint)


# Deadlines of the mounts below (--request-timeout): short, so that stalls cost little time.
# The stalls and delays last longer, so ETIMEDOUT can only come from the deadline.
REQUEST_TIMEOUT = 3.0


def stalls_injected(server: DevServer) -> int:
    return int(server.stats()["faults_injected"].get("stall", 0))


def test_a_stalled_download_times_out_while_the_mount_keeps_serving(
    served: Served, tmp_path: Path
) -> None:
    server = served.server
    with mounted(server, tmp_path, "--request-timeout", str(REQUEST_TIMEOUT)) as mount:
        small = served.path(mount, "small.txt")
        assert small.read_bytes() == served.files["small.txt"]  # now cached
        server.reset_stats()
        server.set_faults(stall_seconds=REQUEST_TIMEOUT + 6, stall_where="storage_before")
        # O_DIRECT: one FUSE read, which the kernel does not retry.
        big = served.path(mount, "big.bin")
        stalled = subprocess.Popen(
            ["dd", f"if={big}", "iflag=direct", "bs=1M", "count=1", "status=none"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert wait_until(lambda: stalls_injected(server) > 0, 30)  # it waits for storage
            # Meanwhile listings and cached content keep coming, before that read gives up.
            listing = run_tool(["ls", served.path(mount, "")])
            assert listing.stdout.decode().split() == sorted(served.files)
            assert run_tool(["cat", small]).stdout == served.files["small.txt"]
            assert stalled.poll() is None, "the stalled read ended before the others were served"
            _, stderr = stalled.communicate(timeout=60)
        finally:
            if stalled.poll() is None:
                stalled.kill()
                stalled.wait()
        assert stalled.returncode != 0
        assert b"Connection timed out" in stderr, stderr
        server.clear_faults()
        assert sha256(run_tool(["cat", big]).stdout) == sha256(served.files["big.bin"])
        assert_clean_log(mount)


def test_slow_listings_wait_and_stalled_ones_time_out(served: Served, tmp_path: Path) -> None:
    server = served.server
    with mounted(server, tmp_path, "--request-timeout", str(REQUEST_TIMEOUT)) as mount:
        runs = mount.path / "runs"
        server.reset_stats()
        server.set_faults(listing_delay=1.5)
        time.sleep(1.2)  # past the metadata TTL
        assert run_tool(["ls", runs]).stdout == b"faulty\n"
        assert server.stats()["faults_injected"]["listing_delay"] >= 1  # served by a slow one
        server.set_faults(listing_delay=REQUEST_TIMEOUT + 4)
        time.sleep(1.2)
        listing = run_tool(["ls", runs], check=False)
        assert b"Connection timed out" in listing.stderr, listing.stderr
        server.clear_faults()
        time.sleep(1.2)
        assert os.listdir(runs) == ["faulty"]
        assert_clean_log(mount)


def write_config(path: Path, url: str, token: str) -> None:
    path.write_text(f'[server]\nurl = "{url}"\ntoken = "{token}"\n')


def test_a_revoked_token_gives_eacces_until_a_valid_one_is_configured(
    served: Served, tmp_path: Path
) -> None:
    server = served.server
    old_token = server.token
    with mounted(server, tmp_path) as mount:
        runs = mount.path / "runs"
        assert os.listdir(runs) == ["faulty"]
        new_token = server.http.post("/admin/tokens", json={"revoke_others": True}).json()["token"]
        time.sleep(1.2)  # past the metadata TTL: the next listing asks the server
        with pytest.raises(PermissionError) as caught:
            os.listdir(runs)
        assert caught.value.errno == errno.EACCES
        log = mount.log_file.read_text(errors="replace")
        assert "the Simvue server refuses the token (token has been revoked)" in log
        # Configured again (where the mount found it): the mount picks it up by itself.
        write_config(server.config_path, server.url, new_token)
        assert wait_until(lambda: run_tool(["ls", runs], check=False).stdout == b"faulty\n", 10)
        assert served.path(mount, "small.txt").read_bytes() == served.files["small.txt"]
        log = mount.log_file.read_text(errors="replace")
        assert old_token not in log
        assert new_token not in log
        assert_clean_log(mount)

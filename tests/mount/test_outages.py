"""A server that goes away for a few seconds, rate-limits, or stalls, seen through a mount.

- An outage of a few seconds (503 for 3 s; the devserver process restarted on the same port
  and data) costs waiting, not an error: listings and reads succeed (the client's budget,
  ``backends/transport.py`` "Retries").
- 429 with ``Retry-After`` is waited for within the deadline; past it, the operation fails
  at once with EAGAIN and the mount asks nothing of that server until the time is up.
- A stalled storage read fails once ``--request-timeout`` has passed, not twice that (the
  kernel's retry of the failed read-ahead read fails at once: ``read/reader.py``).

The switches themselves over plain HTTP: ``tests/server/test_refusal_switches.py``; the
client's waits on a mock clock: ``tests/unit/test_retry_budget.py``.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

from helpers import new_run, sha256, store_artifact

from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted
from testbed.processes import run_tool, wait_until

MIB = 1024 * 1024
# Past the mount's metadata TTL (1 s): the next listing asks the server.
PAST_TTL = 1.2
UNEXPECTED = ("failed unexpectedly", "Traceback")


def seed(server: DevServer, *names: str) -> dict[str, bytes]:
    """Store one artifact per name (3 MiB + a little, random) in run "r"; return them."""
    rng = random.Random(5)
    run_id = new_run(server, "r")
    files = {name: rng.randbytes(3 * MIB + 17) for name in names}
    for name, content in files.items():
        store_artifact(server, run_id, name, content)
    return files


def output(mount: Mount) -> Path:
    return mount.path / "runs" / "r" / "output"


def assert_clean_log(mount: Mount) -> None:
    text = mount.log_file.read_text(errors="replace")
    for marker in UNEXPECTED:
        assert marker not in text, mount.log_tail()


def test_a_503_outage_of_a_few_seconds_is_waited_out(devserver: DevServer, tmp_path: Path) -> None:
    files = seed(devserver, "a.bin")
    with mounted(devserver, tmp_path) as mount:
        assert os.listdir(output(mount)) == ["a.bin"]
        time.sleep(PAST_TTL)
        devserver.set_faults(unavailable_seconds=3.0)
        assert os.listdir(mount.path / "runs") == ["r"]
        assert sha256(run_tool(["cat", output(mount) / "a.bin"]).stdout) == sha256(files["a.bin"])
        assert devserver.stats()["faults_injected"]["unavailable"] >= 1
        assert_clean_log(mount)


def test_a_devserver_restart_during_a_mount_is_waited_out(
    devserver: DevServer, tmp_path: Path
) -> None:
    files = seed(devserver, "a.bin", "b.bin")
    port = devserver.url.rsplit(":", 1)[1]
    with mounted(devserver, tmp_path) as mount:
        assert sorted(os.listdir(output(mount))) == ["a.bin", "b.bin"]
        time.sleep(PAST_TTL)
        devserver.stop()
        # Both need the server: a listing past its TTL, content never read.
        listing = subprocess.Popen(["ls", mount.path / "runs"], stdout=subprocess.PIPE)
        reading = subprocess.Popen(["cat", output(mount) / "b.bin"], stdout=subprocess.PIPE)
        time.sleep(2.0)
        assert listing.poll() is None, "the listing did not wait for the server"
        assert reading.poll() is None, "the read did not wait for the server"
        restarted = DevServer(tmp_path / "again", ["--port", port], data_dir=devserver.data_dir)
        try:
            restarted.start()
            listed, _ = listing.communicate(timeout=60)
            content, _ = reading.communicate(timeout=60)
            assert (listing.returncode, listed) == (0, b"r\n"), mount.log_tail()
            assert reading.returncode == 0, mount.log_tail()
            assert sha256(content) == sha256(files["b.bin"])
            assert sha256(run_tool(["cat", output(mount) / "a.bin"]).stdout) == sha256(
                files["a.bin"]
            )
            assert_clean_log(mount)
        finally:
            for process in (listing, reading):
                if process.poll() is None:
                    process.kill()
                    process.wait()
            restarted.stop()


def test_429_with_retry_after_is_waited_for(devserver: DevServer, tmp_path: Path) -> None:
    files = seed(devserver, "a.bin", "b.bin")
    with mounted(devserver, tmp_path) as mount:
        assert sorted(os.listdir(output(mount))) == ["a.bin", "b.bin"]
        time.sleep(PAST_TTL)
        devserver.set_faults(rate_limit_count=2, rate_limit_retry_after=1)
        assert os.listdir(mount.path / "runs") == ["r"]
        assert devserver.stats()["faults_injected"]["rate_limit"] == 2
        devserver.set_faults(
            rate_limit_count=1, rate_limit_where="storage", rate_limit_retry_after=1.0
        )
        assert sha256(run_tool(["cat", output(mount) / "a.bin"]).stdout) == sha256(files["a.bin"])
        devserver.set_faults(rate_limit_count=1, rate_limit_retry_after=1, rate_limit_date=True)
        assert sha256(run_tool(["cat", output(mount) / "b.bin"]).stdout) == sha256(files["b.bin"])
        assert devserver.stats()["faults_injected"]["rate_limit"] == 4
        assert_clean_log(mount)


def test_429_on_uploads_is_waited_for(devserver: DevServer, tmp_path: Path) -> None:
    """close() returns 0 after the refused requests were sent again (the body too)."""
    seed(devserver, "a.bin")
    content = random.Random(9).randbytes(2 * MIB)
    with mounted(devserver, tmp_path) as mount:
        target = mount.path / "runs" / "r" / "input" / "up.bin"
        devserver.set_faults(
            rate_limit_count=1, rate_limit_where="storage", rate_limit_retry_after=1
        )
        target.write_bytes(content)  # close() reports the upload
        devserver.set_faults(rate_limit_count=1, rate_limit_where="api", rate_limit_retry_after=1)
        (target.parent / "up2.bin").write_bytes(content[:1000])
        assert devserver.stats()["faults_injected"]["rate_limit"] == 2
        (record,) = devserver.run_artifacts(devserver.run_ids("r")[0], name="up.bin")
        assert record["checksum"] == sha256(content)
        assert_clean_log(mount)


def test_429_past_the_deadline_fails_at_once_with_eagain(
    devserver: DevServer, tmp_path: Path
) -> None:
    seed(devserver, "a.bin")
    timeout = 3.0
    hold = 6.0  # Retry-After: longer than the deadline
    with mounted(devserver, tmp_path, "--request-timeout", str(timeout)) as mount:
        runs = mount.path / "runs"
        assert os.listdir(runs) == ["r"]
        time.sleep(PAST_TTL)
        devserver.reset_stats()
        devserver.set_faults(rate_limit_count=1, rate_limit_retry_after=hold)
        limited_at = time.monotonic()
        refused = run_tool(["ls", runs], check=False)
        assert b"Resource temporarily unavailable" in refused.stderr, refused.stderr
        # Not after waiting towards the deadline (a behaviour, with a generous margin).
        assert time.monotonic() - limited_at < timeout
        # Until Retry-After has passed the mount sends nothing: this fails without a request.
        again = run_tool(["ls", runs], check=False)
        assert b"Resource temporarily unavailable" in again.stderr, again.stderr
        stats = devserver.stats()
        assert stats["faults_injected"]["rate_limit"] == 1
        assert stats["api_requests"].get("GET /api/runs", 0) == 0  # (the 429 is not counted)
        time.sleep(max(0.0, limited_at + hold + 0.2 - time.monotonic()))
        assert os.listdir(runs) == ["r"]
        assert_clean_log(mount)


def test_a_stalled_read_fails_within_the_request_timeout(
    devserver: DevServer, tmp_path: Path
) -> None:
    """Buffered reads (cat, dd) see the deadline once: the kernel's retry of the failed
    read-ahead read fails at once instead of waiting as long again."""
    files = seed(devserver, "a.bin", "b.bin")
    timeout = 5.0
    with mounted(devserver, tmp_path, "--request-timeout", str(timeout)) as mount:
        assert sorted(os.listdir(output(mount))) == ["a.bin", "b.bin"]
        # Longer than the deadline, so ETIMEDOUT can only come from the deadline.
        devserver.set_faults(stall_seconds=timeout + 4, stall_where="storage_before")
        for argv in (
            ["cat", output(mount) / "a.bin"],
            ["dd", f"if={output(mount) / 'b.bin'}", "bs=128k", "status=none"],
        ):
            started = time.monotonic()
            result = run_tool(argv, check=False, timeout=60)
            elapsed = time.monotonic() - started
            assert result.returncode != 0
            assert b"Connection timed out" in result.stderr, result.stderr
            assert elapsed < 1.5 * timeout, f"{argv[0]} failed after {elapsed:.1f} s"
        devserver.clear_faults()
        assert wait_until(
            lambda: run_tool(["cat", output(mount) / "a.bin"], check=False).returncode == 0, 30
        )
        assert sha256(run_tool(["cat", output(mount) / "a.bin"]).stdout) == sha256(files["a.bin"])
        assert_clean_log(mount)

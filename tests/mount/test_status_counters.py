"""``simvuefs status`` shows the counters a live mount publishes (``fuse/stats.py``,
``control/counters.py``).

Real mounts of the seeded devserver; the state directory is a temporary one, so the stats
file can be inspected (and must be gone after the unmount).
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from simvuefs.control import counters
from simvuefs.fuse.stats import PUBLISH_INTERVAL
from testbed.mounts import mounted
from testbed.processes import run_tool, wait_until


@pytest.fixture(autouse=True)
def xdg(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def status(*args: str) -> str:
    result = run_tool([sys.executable, "-m", "simvuefs", "status", *args])
    return result.stdout.decode()


def counter(text: str, section: str, name: str) -> int:
    """The value of *name* on the ``section:`` line of the status output (-1 if absent)."""
    line = re.search(rf"^    {re.escape(section)}: (.*)$", text, re.MULTILINE)
    found = line and re.search(rf"(?:^|, ){re.escape(name)} (\d+)", line[1])
    return int(found[1]) if found else -1


def test_status_shows_live_counters(devserver_factory, tmp_path):
    # It writes a file: a server of its own, not the session's shared seeded one.
    server = devserver_factory("--seed", "demo", "--large-size", "1MiB")
    with mounted(server, tmp_path) as mount:
        run = mount.path / "runs" / "demo run"
        content = (run / "output" / "results.csv").read_bytes()
        (run / "input" / "counted.txt").write_bytes(b"twelve bytes")
        text = ""

        def shows_the_work() -> bool:
            nonlocal text
            text = status(str(mount.path))
            return (
                counter(text, "reader", "bytes_returned") >= len(content)
                and counter(text, "uploads", "committed") == 1
            )

        assert wait_until(shows_the_work, 4 * PUBLISH_INTERVAL, interval=0.5), text
        assert f"{mount.path}: mounted (pid {mount.pid})" in text
        assert counter(text, "client", "requests") > 0
        assert counter(text, "client", "retries") == 0
        assert counter(text, "uploads", "bytes_uploaded") == len(b"twelve bytes")
        assert counter(text, "reader", "cache.max_bytes") > 0
        assert "counters (updated" in status()
        stats_file = counters.stats_path(mount.path)
        published = stats_file.read_text()
        assert json.loads(published)["pid"] == mount.pid
        assert server.token not in published
        assert "http" not in published
    assert not stats_file.exists()
    assert "counters" not in status(str(mount.path))


def test_read_only_mount_shows_counters(seeded_devserver, tmp_path):
    with mounted(seeded_devserver, tmp_path, "--read-only") as mount:
        (mount.path / "runs" / "demo run" / "output" / "results.csv").read_bytes()
        text = ""

        def shows_reads() -> bool:
            nonlocal text
            text = status(str(mount.path))
            return counter(text, "reader", "reads") > 0

        assert wait_until(shows_reads, 4 * PUBLISH_INTERVAL, interval=0.5), text
        assert f"{mount.path}: mounted read-only (pid {mount.pid})" in text
        assert "uploads:" not in text
        assert str(mount.path) in status()
    assert "no writable simvuefs mount recorded" in status(str(mount.path))

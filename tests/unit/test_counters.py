"""The counters file of a live mount (``control/counters.py``): its path and format, what
``simvuefs status`` shows of it, and leftovers of dead daemons. The publishing daemon is
tested in tests/mount/test_status_counters.py."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from control_util import simvuefs_process, state_dirs

from simvuefs.control import counters
from testbed.processes import run_tool


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dirs(tmp_path, monkeypatch)


def status(*args: str) -> str:
    return run_tool([sys.executable, "-m", "simvuefs", "status", *args]).stdout.decode()


SOURCES = {
    "client": {"requests": 7, "retries": 0},
    "reader": {"reads": 3, "cache": {"max_bytes": 1024, "hits": 2}},
}


def test_publish_writes_the_envelope_and_the_sources(tmp_path: Path) -> None:
    before = time.time()
    counters.publish(Path("/mnt/a"), SOURCES)
    path = counters.stats_path(Path("/mnt/a"))
    assert path.parent == tmp_path / "state" / "simvuefs" / "stats"
    data = json.loads(path.read_text())
    assert (data["mountpoint"], data["pid"]) == ("/mnt/a", os.getpid())
    assert before <= data["updated"] <= time.time()
    assert {k: data[k] for k in SOURCES} == SOURCES
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    counters.withdraw(Path("/mnt/a"))
    assert not path.exists()
    counters.withdraw(Path("/mnt/a"))


def test_publish_failure_is_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "file"))
    counters.publish(Path("/mnt/a"), SOURCES)
    assert counters.load(Path("/mnt/a")) is None


def write_stats(mountpoint: str, pid: int, **sources: object) -> None:
    path = counters.stats_path(Path(mountpoint))
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"mountpoint": mountpoint, "pid": pid, "updated": time.time() - 3, **sources}
    path.write_text(json.dumps(data))


def test_load_and_describe_a_live_mount() -> None:
    with simvuefs_process() as pid:
        write_stats("/mnt/b", pid, **SOURCES)
        write_stats("/mnt/a", pid, reader={"reads": 1})
        data = counters.load(Path("/mnt/b"))
        assert data is not None
        assert data["reader"] == SOURCES["reader"]
        assert [d["mountpoint"] for d in counters.load_all()] == ["/mnt/a", "/mnt/b"]
        assert counters.describe(data) == (
            "  counters (updated 3 s ago):\n"
            "    client: requests 7, retries 0\n"
            "    reader: reads 3, cache.max_bytes 1024, cache.hits 2\n"
        )
    assert counters.load(Path("/mnt/b")) is None  # its daemon is gone
    assert counters.load_all() == []


def test_stale_stats_of_a_dead_daemon_are_ignored() -> None:
    path = counters.stats_path(Path("/nowhere"))
    path.parent.mkdir(parents=True)
    # pid 1 never is a simvuefs process; pid 2**22 + 1 is above pid_max
    for pid in (1, 2**22 + 1):
        path.write_text(json.dumps({"mountpoint": "/nowhere", "pid": pid, "reader": {"reads": 1}}))
        assert "counters" not in status("/nowhere")
        assert "/nowhere" not in status()
    for garbage in ("{broken", "[]", json.dumps({"mountpoint": "/nowhere"})):
        path.write_text(garbage)
        assert counters.load(Path("/nowhere")) is None

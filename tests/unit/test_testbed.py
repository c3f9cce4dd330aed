"""The shared harness (testbed/) itself: its import rule and the parts that need no mount.

The mounting and devserver parts are exercised by every test in tests/server and
tests/mount; here are the rules that those tests would not notice breaking.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import REPO, mounts
from testbed.processes import alive, run_tool, stop_pid

TESTBED = REPO / "testbed"


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_testbed_never_imports_simvuefs() -> None:
    # Teardown (fusermount, the mount table) must work even when simvuefs is broken.
    files = sorted(TESTBED.glob("*.py"))
    assert files
    for path in files:
        simvuefs = {m for m in _imported_modules(path) if m.split(".")[0] == "simvuefs"}
        assert not simvuefs, f"{path.name} imports {simvuefs}"


def test_mount_table_decodes_octal_escapes() -> None:
    table = (
        b"proc /proc proc rw,nosuid 0 0\n"
        b"simvuefs /tmp/a\\040b/mnt fuse.simvuefs rw,user_id=0 0 0\n"
        b"\n"
        b"tmpfs /tmp/tab\\011and\\134slash tmpfs rw 0 0\n"
    )
    assert mounts.parse_mount_table(table) == ["/proc", "/tmp/a b/mnt", "/tmp/tab\tand\\slash"]


def test_mounts_below_matches_whole_path_components(monkeypatch: pytest.MonkeyPatch) -> None:
    points = ["/", "/work", "/work/run", "/work/run/mnt", "/work/runner", "/work/run/a b"]
    monkeypatch.setattr(mounts, "mount_points", lambda: points)
    below = mounts.mounts_below(Path("/work/run"))
    assert below == [Path("/work/run"), Path("/work/run/mnt"), Path("/work/run/a b")]


def test_stop_pid_waits_for_a_process_that_exits_by_itself() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    try:
        assert stop_pid(process.pid, exit_timeout=30)
        assert not alive(process.pid)  # a zombie until reaped counts as gone
    finally:
        process.kill()
        process.wait()


def test_stop_pid_kills_a_process_that_does_not_exit() -> None:
    process = subprocess.Popen(["sleep", "60"])
    try:
        assert not stop_pid(process.pid, exit_timeout=0.2)
        assert process.wait(5) == -signal.SIGTERM  # SIGTERM was enough
    finally:
        process.kill()
        process.wait()


def test_run_tool_fails_on_a_non_zero_exit_and_on_a_timeout() -> None:
    assert run_tool(["true"]).returncode == 0
    assert run_tool(["false"], check=False).returncode == 1
    with pytest.raises(AssertionError, match="exited with 1"):
        run_tool(["false"])
    with pytest.raises(AssertionError, match="did not finish within 0.2 s"):
        run_tool(["sleep", "10"], timeout=0.2)

"""``docs/systemd/simvuefs.service`` works as written: its commands, run the way systemd
runs them (``%h`` = the user's home, a leading ``-`` = failure ignored), mount
``~/simvue`` from ``~/simvue.toml``, and ``ExecStop`` ends the service with status 0 (so
``Restart=on-failure`` leaves it stopped).

No systemd runs in the test environment, so the test plays its part: it reads the unit,
substitutes ``%h`` with a temporary home whose ``~/.local/bin/simvuefs`` is the installed
command, and runs ExecStartPre, ExecStart (a foreground process) and ExecStop in order.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from testbed import REPO
from testbed.mounts import daemon_pids, is_mounted, unmount
from testbed.processes import run_tool, wait_until

UNIT = REPO / "docs" / "systemd" / "simvuefs.service"


def service_commands(home: Path) -> dict[str, list[tuple[bool, list[str]]]]:
    """Return ``{ExecStartPre|ExecStart|ExecStop: [(failure ignored, argv)]}`` of the unit."""
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    commands: dict[str, list[tuple[bool, list[str]]]] = {}
    for line in UNIT.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStartPre", "ExecStart", "ExecStop"):
            ignored = value.startswith("-")
            argv = shlex.split(value.removeprefix("-").replace("%h", str(home)))
            commands.setdefault(key, []).append((ignored, argv))
    unit.read_string(UNIT.read_text())
    assert unit["Service"]["Type"] == "simple"
    assert unit["Service"]["Restart"] == "on-failure"
    return commands


def test_unit_runs_as_written(seeded_devserver, tmp_path):
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "simvuefs").symlink_to(REPO / ".venv" / "bin" / "simvuefs")
    shutil.copy(seeded_devserver.config_path, home / "simvue.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMVUE_", "XDG_"))}
    env["HOME"] = str(home)
    commands = service_commands(home)
    mountpoint = home / "simvue"
    for ignored, argv in commands["ExecStartPre"]:
        run_tool(argv, env=env, cwd="/", check=not ignored)
    [(_, start)] = commands["ExecStart"]
    output = tmp_path / "journal"
    with output.open("wb") as journal:
        service = subprocess.Popen(start, env=env, cwd="/", stdout=journal, stderr=journal)
    try:
        assert wait_until(lambda: is_mounted(mountpoint) or service.poll() is not None, 30.0)
        assert is_mounted(mountpoint), output.read_text()
        assert "demo run" in os.listdir(mountpoint / "runs")
        for ignored, argv in commands["ExecStop"]:
            run_tool(argv, env=env, cwd="/", check=not ignored)
        assert service.wait(30) == 0, output.read_text()
        assert not is_mounted(mountpoint)
        assert "mounted at" in output.read_text()
    finally:
        unmount(mountpoint)
        if service.poll() is None:
            service.kill()
            service.wait(10)
        assert not daemon_pids(mountpoint)

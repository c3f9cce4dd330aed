"""Bad local input: configs and arguments a user should never write are answered with a
short error (one line for our own checks, argparse's usage and one line for its own), a
non-zero exit status, and no traceback. Nothing is mounted: every case fails before that.

What a server should never send is ``tests/mount/test_hostile.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.processes import run_tool


def simvuefs(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return run_tool([sys.executable, "-m", "simvuefs", *args], check=False, env=env, timeout=60)


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
    env["HOME"] = str(home)
    return env


CONFIGS = {
    "not toml": b"[server\nurl = http://x\n",
    "binary": bytes(range(256)) * 4,
    "url is a number": b'[server]\nurl = 42\ntoken = "a.b.c"\n',
    "token is a table": b'[server]\nurl = "http://127.0.0.1:1"\n[server.token]\nx = 1\n',
    "token not a jwt": b'[server]\nurl = "http://127.0.0.1:1"\ntoken = "not-a-token"\n',
    "url with credentials": b'[server]\nurl = "http://user:pw@127.0.0.1:1"\ntoken = "a.b.c"\n',
    "url not http": b'[server]\nurl = "ftp://127.0.0.1"\ntoken = "a.b.c"\n',
    "empty": b"",
    "nul bytes": b'[server]\nurl = "http://\x00"\n',
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_malformed_configs_give_one_line(tmp_path: Path, case: str) -> None:
    config = tmp_path / "simvue.toml"
    config.write_bytes(CONFIGS[case])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = simvuefs(
        "mount", mountpoint, "--config", config, "--foreground", env=clean_env(tmp_path)
    )
    assert result.returncode != 0
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("simvuefs: "), lines
    assert result.stdout == b""


@pytest.mark.parametrize(
    "args",
    [
        ["mount"],
        ["mount", "MNT", "--metadata-ttl", "-3"],
        ["mount", "MNT", "--metadata-ttl", "soon"],
        ["mount", "MNT", "--log-level", "LOUD"],
        ["mount", "MNT", "--no-such-option"],
        ["unmount"],
        ["devserver", "--data", "DATA", "--fault", "nonsense"],
        ["devserver", "--data", "DATA", "--fault", "extra_runs=-1"],
        ["devserver", "--data", "DATA", "--port", "70000"],
        ["frobnicate"],
    ],
    ids=lambda args: " ".join(args),
)
def test_malformed_arguments_give_a_short_error(tmp_path: Path, args: list[str]) -> None:
    argv = [a.replace("MNT", str(tmp_path)).replace("DATA", str(tmp_path / "d")) for a in args]
    result = simvuefs(*argv, env=clean_env(tmp_path))
    assert result.returncode == 2
    text = result.stderr.decode(errors="replace")
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    # argparse: usage, then one error line; our own checks: just one line.
    assert lines[-1].startswith("simvuefs"), lines
    assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), lines

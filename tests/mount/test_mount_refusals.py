"""Mounts refused before they start: configs a user should never write, and offline caches
that cannot be used or options an offline mount cannot take, are answered with one line on
stderr and a non-zero exit status, and nothing stays mounted. These run the real
``simvuefs mount``; what fails in argparse first is ``tests/unit/test_bad_local_input.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from control_util import clean_env, run_cli

from testbed.mounts import is_mounted
from testbed.processes import run_tool

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
    result = run_cli(
        "mount", mountpoint, "--config", config, "--foreground", env=clean_env(tmp_path)
    )
    assert result.returncode != 0
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("simvuefs: "), lines
    assert result.stdout == b""


@pytest.mark.parametrize("foreground", [False, True])
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("nope", "offline cache directory {} does not exist"),
        ("a-file", "offline cache {} is not a directory"),
    ],
)
def test_an_unusable_cache_directory_fails_in_one_line(
    tmp_path: Path, foreground: bool, name: str, problem: str
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    (tmp_path / "a-file").write_text("")
    argv = [sys.executable, "-m", "simvuefs", "mount", mountpoint, "--offline", tmp_path / name]
    argv += ["--log-file", tmp_path / "log"] + (["--foreground"] if foreground else [])
    result = run_tool(argv, check=False)
    assert result.returncode != 0
    lines = result.stderr.decode().splitlines()
    assert lines == ["simvuefs: " + problem.format(tmp_path / name)]
    assert not is_mounted(mountpoint)


def test_offline_refuses_server_options(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    argv = [sys.executable, "-m", "simvuefs", "mount", mountpoint, "--offline", tmp_path]
    argv += ["--url", "http://127.0.0.1:9", "--foreground", "--log-file", tmp_path / "log"]
    result = run_tool(argv, check=False)
    assert result.returncode != 0
    assert result.stderr.decode().splitlines() == [
        "simvuefs: --offline mounts a cache, not a server: drop --url and --profile"
    ]

"""Security properties through real mounts: secrets stay secret, the mount stays private.

- The token never appears in the mount's log (at DEBUG), in ``ps`` output, or in any file
  the mount writes (spool, journal, mount records), whatever happens: reads, uploads,
  errors, refused tokens, refreshed URLs. Neither do the signatures of storage URLs.
- The mount is private to the mounting user unless ``--allow-other``: another user (nobody)
  gets EACCES from the kernel.

Checked elsewhere: there is no ``--token`` option and no module unpickles, evaluates or
executes anything (``tests/unit/test_security_rules.py``); the client never sends the token
to storage (``tests/unit/test_client_mocked.py``); the devserver refuses missing, forged and
expired tokens and tampered storage URLs (``tests/server/test_devserver.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from helpers import new_run, store_artifact

from testbed.devserver import DevServer
from testbed.mounts import mounted
from testbed.processes import run_tool

NOBODY = 65534


def private_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give the mount (which inherits the environment) state and cache directories of its own."""
    base = tmp_path / "xdg"
    for variable in ("XDG_CACHE_HOME", "XDG_STATE_HOME"):
        (base / variable).mkdir(parents=True)
        monkeypatch.setenv(variable, str(base / variable))
    for variable in ("SIMVUE_TOKEN", "SIMVUE_URL"):
        monkeypatch.delenv(variable, raising=False)
    return base


def test_the_token_and_url_signatures_never_leave_a_trace(
    devserver: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg = private_env(tmp_path, monkeypatch)
    token = devserver.http.post("/admin/tokens", json={}).json()["token"]
    config = devserver.config_path
    config.write_text(f'[server]\nurl = "{devserver.url}"\ntoken = "{token}"\n')
    run_id = new_run(devserver, "secrets")
    record = store_artifact(devserver, run_id, "data.bin", os.urandom(3 * 1024 * 1024))
    signature = dict(parse_qsl(urlsplit(record["url"]).query))["sig"]
    secrets = {"token": token, "token signature": token.rsplit(".", 1)[1], "url sig": signature}
    places: dict[str, str] = {}
    with mounted(devserver, tmp_path, "--log-level", "DEBUG", "--request-timeout", "3") as mount:
        base = mount.path / "runs" / "secrets"
        places["ps"] = run_tool(["ps", "-eo", "args"]).stdout.decode(errors="replace")
        assert (base / "output" / "data.bin").read_bytes()
        (base / "input" / "landed.txt").write_bytes(b"uploaded through the mount\n")
        # An upload that cannot land now stays pending, with its journal record on disk.
        devserver.set_faults(
            api_error_status=503, api_error_rate=1.0, api_error_route="POST /api/artifacts"
        )
        with pytest.raises(OSError):  # noqa: PT011 (EIO or ETIMEDOUT: both are fine here)
            (base / "input" / "pending.txt").write_bytes(b"waiting for the server\n")
        places.update(files_below(xdg))
        # Errors of all kinds: missing names, storage failures, expired URLs, a refused token.
        assert not (base / "output" / "missing").exists()
        devserver.set_faults(storage_error_status=500, storage_error_count=20, url_expiry=-1)
        big = base / "output" / "data.bin"
        run_tool(
            ["dd", f"if={big}", "iflag=direct", "bs=4k", "skip=300", "status=none"], check=False
        )
        devserver.http.post("/admin/tokens", json={"revoke_others": True})
        time.sleep(1.2)
        with pytest.raises(PermissionError):
            os.listdir(mount.path / "runs")
        devserver.clear_faults()
    places["log"] = mount.log_file.read_text(errors="replace")
    places.update({f"{name} (after unmount)": text for name, text in files_below(xdg).items()})
    assert any("pending" in name for name in places), sorted(places)  # the journal was seen
    for where, text in places.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in {where}"
    assert "refuses the token" in places["log"]


def files_below(directory: Path) -> dict[str, str]:
    return {
        str(path): path.read_text(errors="replace")
        for path in directory.rglob("*")
        if path.is_file()
    }


def as_nobody(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]
    return run_tool(command, check=False)


def mount_options(mountpoint: Path) -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as table:
        for line in table:
            fields = line.split()
            if fields[1] == str(mountpoint):
                return fields[3].split(",")
    raise AssertionError(f"{mountpoint} is not in /proc/mounts")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's temporary directories are 0700, which
    would keep other users out of any mount below them whatever the mount allows)."""
    path = Path(tempfile.mkdtemp(prefix="simvuefs-security-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_mount_is_private_unless_allow_other(devserver: DevServer, public_dir: Path) -> None:
    run_id = new_run(devserver, "private")
    store_artifact(devserver, run_id, "secret.txt", b"for my eyes only\n")
    for name in ("one", "two"):
        (public_dir / name).mkdir(mode=0o755)
    with mounted(devserver, public_dir / "one") as mount:
        assert "allow_other" not in mount_options(mount.path)
        assert f"user_id={os.getuid()}" in mount_options(mount.path)
        assert as_nobody("ls", public_dir / "one").returncode == 0  # the way in is open
        refused = as_nobody("ls", mount.path / "runs")
        assert refused.returncode != 0
        assert b"Permission denied" in refused.stderr
        file = mount.path / "runs" / "private" / "output" / "secret.txt"
        assert b"Permission denied" in as_nobody("cat", file).stderr
    with mounted(devserver, public_dir / "two", "--allow-other") as shared:
        assert "allow_other" in mount_options(shared.path)
        listing = as_nobody("ls", shared.path / "runs")
        assert listing.stdout == b"private\n", listing.stderr
        file = shared.path / "runs" / "private" / "output" / "secret.txt"
        assert as_nobody("cat", file).stdout == b"for my eyes only\n"
        # Others may read what is shared, never write into it.
        written = as_nobody("touch", shared.path / "runs" / "private" / "input" / "theirs.txt")
        assert b"Permission denied" in written.stderr

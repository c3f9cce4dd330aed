"""Helpers for the tests of the host-side commands (``simvuefs.control``), without a mount.

- :func:`simvuefs_process`: a live process that ``registry.simvuefs_running`` accepts as a
  mount daemon (its command line names simvuefs), stopped at the end.
- :func:`pending_upload`: a spool holding one pending upload, as a mount leaves it.
- :func:`state_dirs`: point ``XDG_STATE_HOME`` and ``XDG_CACHE_HOME`` into a test's directory.
- :func:`make_jwt`: a token that passes the client's checks (nobody verifies its signature).
- :func:`command`: run ``simvuefs ARGS`` in a fresh interpreter and report which of the
  heavy modules (pyfuse3, httpx) it loaded; :func:`run_cli`: just run it;
  :func:`clean_env`: an environment free of ``SIMVUE_*`` settings.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simvuefs.write.spool import JournalRecord, Spool, new_spool_id
from testbed.processes import run_tool, wait_until

REPORT_MODULES = """
import sys
from simvuefs import cli
try:
    cli.main(sys.argv[1:])
except SystemExit as done:
    code = done.code
loaded = [name for name in ("pyfuse3", "httpx") if name in sys.modules]
print("loaded:", ",".join(loaded) or "nothing", "exit:", code, file=sys.stderr)
"""
"""Run the command line given as arguments, then report on stderr which of the heavy
modules it loaded and its exit status."""


def command(*args: object, env: dict[str, str] | None = None) -> tuple[str, str, str]:
    """Run ``simvuefs ARGS`` in a fresh interpreter: (stdout, its error lines, report)."""
    argv = [sys.executable, "-c", REPORT_MODULES, *map(str, args)]
    result = run_tool(argv, env=env, check=False)
    *errors, report = result.stderr.decode().strip().splitlines()
    return result.stdout.decode(), "\n".join(errors), report


@contextmanager
def simvuefs_process() -> Iterator[int]:
    """Yield the pid of a sleeping process whose command line is a mount's,
    ``<python> <dir>/simvuefs mount /mnt/a`` (a script named ``simvuefs`` that sleeps)."""
    with tempfile.TemporaryDirectory() as scripts:
        script = Path(scripts) / "simvuefs"
        script.write_text("import time\ntime.sleep(120)\n")
        process = subprocess.Popen([sys.executable, str(script), "mount", "/mnt/a"])
        try:
            # Right after exec, /proc/<pid>/cmdline can still read empty for a moment.
            assert wait_until(lambda: _cmdline(process.pid) != b"", 10.0)
            yield process.pid
        finally:
            process.kill()
            process.wait()


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read()


def pending_upload(spool_dir: Path, content: bytes, **record: object) -> JournalRecord:
    """Leave one pending upload of *content* in the spool at *spool_dir*; *record* sets
    fields of its journal record (``run_id``, ``name``, ``attempts``, ``last_error`` ...)."""
    fields: dict[str, object] = {
        "id": new_spool_id(),
        "run_id": "run-1",
        "category": "input",
        "name": "results.csv",
        "checksum": "0" * 64,
        "size": len(content),
        "created": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
    }
    journal = JournalRecord(**{**fields, **record})  # type: ignore[arg-type]
    spool = Spool.open(spool_dir, min_free=0)
    try:
        spool.data_path(journal.id).write_bytes(content)
        spool.save(journal)
    finally:
        spool.close()
    return journal


def state_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Use state and cache directories below *tmp_path* here and in child processes;
    return the variables set."""
    variables = {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def make_jwt(payload: Mapping[str, object] | None = None) -> str:
    """An HS256-shaped JWT of *payload* (default: valid for a day) with a signature nobody
    made."""

    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": "test", "exp": int(time.time()) + 86400} if payload is None else payload
    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = encode(json.dumps(dict(claims)).encode())
    return f"{header}.{body}.{encode(b'not-a-real-signature')}"


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m simvuefs ARGS`` (whatever its exit status; 60 s at most)."""
    return run_tool([sys.executable, "-m", "simvuefs", *args], check=False, env=env, timeout=60)


def clean_env(home: Path) -> dict[str, str]:
    """This process's environment without ``SIMVUE_*`` settings, with ``HOME`` = *home*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
    env["HOME"] = str(home)
    return env

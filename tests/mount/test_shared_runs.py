"""Runs of other users on a real mount: shown by default, hidden by ``--own-runs-only``,
readable, and their ``input/`` read-only at once (no request reaches the server).

The devserver is seeded with ``--seed multiuser``: the demo runs of the mounting user (the
default user) plus runs of ``colleague`` and ``outsider``, three of them visible to the
mounting user (``sharing_util.SHARED_WITH_ME``). As an unprivileged user the kernel refuses
writes into a ``0555`` directory itself; as root (CAP_DAC_OVERRIDE) the request reaches the
daemon, which refuses it: the tests hold for both.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from helpers import sha256
from official_util import OfficialClient
from sharing_util import MULTIUSER, SHARED_WITH_ME, seeded_names

from simvuefs.devserver import seed
from simvuefs.devserver.store import DEFAULT_USER
from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted
from testbed.processes import run_tool

CREATE = "POST /api/artifacts"
ATTACH = "PUT /api/runs/{run_id}/artifacts/{artifact_id}"


@pytest.fixture
def server(devserver_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DevServer:
    """A ``--seed multiuser`` devserver; mounts keep their records and spools in tmp_path."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server: DevServer = devserver_factory(*MULTIUSER)
    return server


def _shown(mount: Mount) -> list[str]:
    """The run names under runs/ (aliases cut back to the name, ``∕`` back to ``/``)."""
    names = os.listdir(mount.path / "runs")
    return sorted(name.partition("@")[0].replace("\u2215", "/") for name in names)


def _refusal(*command: str | Path) -> str:
    """Run *command*, which must fail; return its stderr."""
    result = run_tool(list(command), check=False)
    assert result.returncode != 0, command
    return result.stderr.decode()


def test_shared_runs_are_shown_and_readable(server: DevServer, tmp_path: Path):
    with mounted(server, tmp_path, "--read-only") as mount:
        assert _shown(mount) == seeded_names(DEFAULT_USER)
        assert {run.name for run in SHARED_WITH_ME} <= set(_shown(mount))
        assert "colleague private" not in _shown(mount)
        shared = mount.path / "runs" / "shared with me"
        expected = seed.SHARED_ARTIFACTS["shared_params"].content
        assert (shared / "input" / "params.txt").read_bytes() == expected
        assert os.getxattr(shared, "user.simvue.name") == b"shared with me"


def test_own_runs_only_hides_the_runs_of_others(server: DevServer, tmp_path: Path):
    with mounted(server, tmp_path, "--own-runs-only") as mount:
        assert _shown(mount) == sorted(run.name for run in seed.RUNS)
        assert not (mount.path / "runs" / "shared with me").exists()
        assert (mount.path / "runs" / "demo run" / "input" / "notes.txt").is_file()


def test_input_of_a_shared_run_refuses_new_files_at_once(server: DevServer, tmp_path: Path):
    source = tmp_path / "new.txt"
    source.write_bytes(b"would be refused by the server\n")
    with mounted(server, tmp_path) as mount:
        shared = mount.path / "runs" / "shared with me" / "input"
        assert stat.S_IMODE(shared.stat().st_mode) == 0o555
        own = mount.path / "runs" / "demo run" / "input"
        assert stat.S_IMODE(own.stat().st_mode) == 0o755
        server.reset_stats()
        assert "Permission denied" in _refusal("cp", source, shared)
        assert "Permission denied" in _refusal("touch", shared / "touched.txt")
        assert "Permission denied" in _refusal("mkdir", shared / "sub")
        with pytest.raises(PermissionError) as opened:
            (shared / "direct.txt").write_bytes(b"x")
        assert opened.value.errno == errno.EACCES
        stats = server.stats()
        assert CREATE not in stats["api_requests"]
        assert ATTACH not in stats["api_requests"]
        assert stats["uploads"] == 0
        assert sorted(os.listdir(shared)) == ["params.txt"]
        # The user's own runs still take files.
        run_tool(["cp", source, own])  # close() returns once the file landed
        demo = server.run_ids("demo run")[0]
        (landed,) = [a for a in server.run_artifacts(demo) if a["name"] == "new.txt"]
        assert landed["checksum"] == sha256(source.read_bytes())
    log = mount.log_file.read_text()
    assert "run(s) shown are other users'" in log
    if os.geteuid() == 0:  # the kernel let root's requests through: the daemon said why
        assert "only its owner can add input files" in log


OFFICIAL_LISTINGS = """
import json
from simvue import Client
client = Client()
names = {
    key: sorted(run.name for _, run in client.get_runs([], count_limit=None, show_shared=shared))
    for key, shared in (("all", True), ("own", False))
}
print("RESULT: " + json.dumps(names))
"""
"""The official client's ``get_runs`` with and without ``show_shared`` (its default: True)."""


def test_the_official_client_lists_the_same_runs(server: DevServer, tmp_path: Path):
    names = OfficialClient(server, tmp_path / "official").script(OFFICIAL_LISTINGS)
    assert names["own"] != names["all"]
    with mounted(server, tmp_path) as mount:
        assert _shown(mount) == names["all"]
    (tmp_path / "own").mkdir()
    with mounted(server, tmp_path / "own", "--own-runs-only") as mount:
        assert _shown(mount) == names["own"]

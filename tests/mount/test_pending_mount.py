"""Refusals that are final, ``simvuefs pending`` and ``--no-delete``, on real mounts.

The devserver refuses for good with its switches: names (``reject_artifact_names``: 422),
the attach to a run that is not the user's (403 on the attach route) and content over
``--max-upload-size`` (S3's EntityTooLarge). ``close()`` must return EINVAL, EACCES and
EFBIG; the file stays listed, readable and marked failed; ``simvuefs status`` shows the
server's message; nothing is retried until ``simvuefs pending retry``, which a running
mount applies at once and a stopped one at its next start; ``pending export`` and
``pending drop`` get files out and forget them. XDG directories point into the test's
temporary directory.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import sha256

from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted
from testbed.processes import run_tool, wait_until

LIMIT = 100_000
"""The devserver's --max-upload-size."""
CREATE = "POST /api/artifacts"
ATTACH = "PUT /api/runs/{run_id}/artifacts/{artifact_id}"
DELETE = "DELETE /api/artifacts/{artifact_id}"
LAND_TIMEOUT = 30.0


def simvuefs(*args: str | Path, check: bool = True) -> tuple[int, str, str]:
    """Run ``simvuefs ARGS``: exit status, stdout, stderr."""
    result = run_tool([sys.executable, "-m", "simvuefs", *map(str, args)], check=check)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def close_errno(path: Path, content: bytes) -> int:
    """Write *content* to the new file *path*; return the errno of its close() (0: none)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, content)
    try:
        os.close(fd)
    except OSError as exc:
        return exc.errno or -1
    return 0


@pytest.fixture(scope="module")
def module_server(xdg: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("server"), ["--max-upload-size", str(LIMIT)]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared(module_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    base = tmp_path_factory.mktemp("shared")
    with mounted(module_server, base, "--spool-dir", str(base / "spool")) as mount:
        yield mount


def new_run(server: DevServer, mount: Mount, name: str) -> tuple[str, Path]:
    """A fresh run: its id and its input/ directory in *mount*."""
    answer = server.api("POST", "/runs", json={"name": name, "folder": "/p"})
    answer.raise_for_status()
    inputs = mount.path / "runs" / name / "input"
    assert wait_until(inputs.exists, 5), f"{name} did not appear in the mount"
    return answer.json()["id"], inputs


def inputs_of(server: DevServer, run_id: str) -> dict[str, str]:
    return {a["name"]: a["checksum"] for a in server.run_artifacts(run_id, category="input")}


def wait_landed(server: DevServer, run_id: str, expected: dict[str, str]) -> None:
    if not wait_until(lambda: inputs_of(server, run_id) == expected, LAND_TIMEOUT, 0.2):
        assert inputs_of(server, run_id) == expected


def creates(server: DevServer) -> int:
    count: int = server.stats()["api_requests"].get(CREATE, 0)
    return count


def refuse_three(server: DevServer, directory: Path) -> dict[str, bytes]:
    """Write three files the server refuses for good, checking close()'s errno; return
    their contents by name."""
    contents = {
        "refused.dat": b"a name the server rejects",
        "big.bin": random.Random(3).randbytes(LIMIT + 1),
        "theirs.dat": b"attached to a run that is not mine",
    }
    faults: list[tuple[str, int, dict[str, object]]] = [
        ("refused.dat", errno.EINVAL, {"reject_artifact_names": "^refused"}),
        ("big.bin", errno.EFBIG, {}),
        (
            "theirs.dat",
            errno.EACCES,
            {"api_error_status": 403, "api_error_rate": 1.0, "api_error_route": ATTACH},
        ),
    ]
    for name, expected, switches in faults:
        server.clear_faults()
        server.set_faults(**switches)
        assert close_errno(directory / name, contents[name]) == expected, name
    server.clear_faults()
    return contents


def test_close_reports_final_refusals_and_nothing_retries_them(
    server: DevServer, shared: Mount
) -> None:
    run_id, directory = new_run(server, shared, "refusals 1")
    contents = refuse_three(server, directory)
    for name, content in contents.items():
        path = directory / name
        assert name in os.listdir(directory)
        assert path.read_bytes() == content
        assert os.getxattr(path, "user.simvue.state") == b"pending"
        pending = os.getxattr(path, "user.simvue.pending").decode()
        assert pending.startswith("refused by the server, not retried ('simvuefs pending'): ")
    _, status, _ = simvuefs("status", shared.path)
    assert "3 pending upload(s), 3 failed\n" in status
    assert "FAILED (EINVAL), not retried: POST " in status
    assert "is not allowed (injected)" in status  # the server's own message
    assert "FAILED (EFBIG), not retried: POST " in status
    assert "EntityTooLarge: Your proposed upload exceeds the maximum allowed size" in status
    assert "FAILED (EACCES), not retried: PUT " in status
    before = creates(server)
    time.sleep(3)  # past the first backoff periods of a mount (2 s doubling)
    assert creates(server) == before
    assert inputs_of(server, run_id) == {}
    simvuefs("pending", "drop", "--yes", shared.path)  # leave the shared mount clean


def test_pending_retry_reaches_the_running_mount(server: DevServer, shared: Mount) -> None:
    run_id, directory = new_run(server, shared, "refusals 2")
    contents = refuse_three(server, directory)
    _, out, _ = simvuefs("pending", "retry", shared.path)
    assert out == (
        f"{shared.path}: 3 pending upload(s) retried, 3 of them had been refused "
        "(the running mount attempts them now)\n"
    )
    landed = {name: sha256(contents[name]) for name in ("refused.dat", "theirs.dat")}
    wait_landed(server, run_id, landed)
    # still too large: refused again, and it says so
    assert wait_until(
        lambda: "1 pending upload(s), 1 failed" in simvuefs("status", shared.path)[1], 10
    )
    assert (directory / "refused.dat").read_bytes() == contents["refused.dat"]
    simvuefs("pending", "drop", "--yes", shared.path)


def test_export_then_drop_on_the_running_mount(
    server: DevServer, shared: Mount, tmp_path: Path
) -> None:
    run_id, directory = new_run(server, shared, "refusals 3")
    contents = refuse_three(server, directory)
    code, out, err = simvuefs("pending", "drop", shared.path, check=False)
    assert (code, out) == (1, "")
    assert "not dropping anything: 3 file(s) were not exported" in err
    dest = tmp_path / "rescued"
    _, out, _ = simvuefs("pending", "export", dest, shared.path)
    assert out.startswith(f"3 pending upload(s) exported to {dest}")
    for name, content in contents.items():
        assert (dest / run_id / "input" / name).read_bytes() == content
    manifest = json.loads((dest / "manifest.json").read_bytes())
    assert sorted((e["name"], e["state"], e["sha256"]) for e in manifest) == sorted(
        (name, "failed", sha256(content)) for name, content in contents.items()
    )
    _, out, _ = simvuefs("pending", "drop", shared.path)
    assert out == f"{shared.path}: 3 upload(s) dropped\n"
    assert os.listdir(directory) == []  # the mount no longer shows them
    assert "0 pending upload(s)" in simvuefs("status", shared.path)[1]
    assert inputs_of(server, run_id) == {}


def test_a_stopped_mount_retries_at_its_next_start(server: DevServer, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (tmp_path / "one").mkdir()
    with mounted(server, tmp_path / "one", "--spool-dir", str(spool)) as mount:
        run_id, directory = new_run(server, mount, "refusals 4")
        server.set_faults(reject_artifact_names="^refused")
        assert close_errno(directory / "refused.dat", b"later") == errno.EINVAL
        mountpoint = mount.path
    server.clear_faults()
    # a mount killed with nothing pending is not listed; the stopped one with a failure is
    (tmp_path / "killed").mkdir()
    with mounted(server, tmp_path / "killed") as killed:
        os.kill(killed.pid, signal.SIGKILL)
        assert wait_until(lambda: not Path(f"/proc/{killed.pid}").exists(), 10)
        simvuefs("unmount", killed.path)
    _, status, _ = simvuefs("status")
    assert f"{mountpoint}: not mounted (pending uploads resume at its next mount)" in status
    assert "FAILED (EINVAL)" in status
    assert str(killed.path) not in status
    _, out, _ = simvuefs("pending", "retry", mountpoint)
    assert out == (
        f"{mountpoint}: 1 pending upload(s) retried, 1 of them had been refused "
        "(at its next mount)\n"
    )
    assert "FAILED" not in simvuefs("status", mountpoint)[1]
    shutil.rmtree(tmp_path / "one")
    (tmp_path / "one").mkdir()
    with mounted(server, tmp_path / "one", "--spool-dir", str(spool)):
        wait_landed(server, run_id, {"refused.dat": sha256(b"later")})


def rsync(*args: str | Path) -> None:
    run_tool(["rsync", *map(str, args)])


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_no_delete_refuses_renames_of_uploaded_files_and_the_rsync_recipes_work(
    server: DevServer, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    contents = {f"file{i}.dat": random.Random(i).randbytes(5000 + i) for i in range(3)}
    for name, content in contents.items():
        (source / name).write_bytes(content)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "m").mkdir()
    server.reset_stats()
    with mounted(server, tmp_path / "m", "--no-delete") as mount:
        run_id, directory = new_run(server, mount, "no deletes")
        assert close_errno(directory / ".mesh.tmp", b"mesh") == 0
        with pytest.raises(OSError, match="Invalid cross-device link") as refused:
            os.rename(directory / ".mesh.tmp", directory / "mesh.dat")
        assert refused.value.errno == errno.EXDEV
        # the recipes: write in place, or keep rsync's temporary file outside the mount
        rsync("-rt", "--inplace", source / "file0.dat", f"{directory}/")
        rsync("-rt", f"--temp-dir={scratch}", source / "file1.dat", f"{directory}/")
        rsync("-rt", f"--temp-dir={scratch}", source / "file2.dat", f"{directory}/")
    expected = {name: sha256(content) for name, content in contents.items()}
    assert inputs_of(server, run_id) == {".mesh.tmp": sha256(b"mesh"), **expected}
    assert server.stats()["api_requests"].get(DELETE, 0) == 0

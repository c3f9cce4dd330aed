"""Acceptance tests of the write path: real mounts of the real devserver, real tools.

Files are written into ``runs/<run>/input/`` with ``cp``, ``cp -p``, ``dd``, ``rsync -a``,
``tar x``, ``shutil.copy2``, ``numpy.save`` and plain ``open``/``os.write``; the checks
look at what the OFFICIAL simvue client lists and downloads for the run (sha256 of every
file), at the devserver's own records and counters, and at what the mount shows.

Failures are made with the devserver's fault switches (create, storage upload, BadDigest,
attach); ``close()`` must report them, the file must stay visible and pending, and it must
land on its own once the fault is gone, also after the daemon was killed with SIGKILL in
the middle of an upload and mounted again.

Most tests share one devserver and one writable mount per module, each with a run of its
own; tests that kill, signal or remount get their own mounts. XDG state and cache
directories point into the test's temporary directory, so mount records and spools never
touch the real home directory.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import pytest
from helpers import (
    attach_artifact,
    errno_of,
    server_inputs,
    sha256,
    sha256_file,
    store_artifact,
    tree_digests,
)
from official_util import official_inputs

from simvuefs.control import counters
from simvuefs.fuse.attrs import PREFERRED_IO_SIZE
from simvuefs.fuse.stats import PUBLISH_INTERVAL
from simvuefs.write.landing import LANDED_RETENTION
from testbed.devserver import DevServer
from testbed.mounts import Mount, is_mounted, mounted
from testbed.processes import run_tool, wait_until

MIB = 1024 * 1024
CREATE = "POST /api/artifacts"
ATTACH = "PUT /api/runs/{run_id}/artifacts/{artifact_id}"
LAND_TIMEOUT = 30.0
"""Longest wait for a background retry to land a file (backoff starts at 1-2 s)."""
_run_numbers = itertools.count(1)


def simvuefs(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return run_tool([sys.executable, "-m", "simvuefs", *map(str, args)], check=check)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(module_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One writable mount shared by the tests that do not stop or restart it."""
    base = tmp_path_factory.mktemp("shared")
    with mounted(module_server, base, "--spool-dir", str(base / "spool")) as mount:
        yield mount


@dataclass
class RunDir:
    """A fresh run of the devserver and its input directory in a mount."""

    id: str
    name: str
    input: Path


def new_run(server: DevServer, mount: Mount) -> RunDir:
    name = f"writes {next(_run_numbers)}"
    response = server.api("POST", "/runs", json={"name": name, "folder": "/w"})
    response.raise_for_status()
    made = RunDir(response.json()["id"], name, mount.path / "runs" / name / "input")
    assert wait_until(made.input.exists, 5), f"{name} did not appear in the mount"
    return made


@pytest.fixture
def run(server: DevServer, shared: Mount) -> RunDir:
    return new_run(server, shared)


def wait_landed(server: DevServer, run_id: str, expected: dict[str, str]) -> None:
    """Wait until the server lists exactly *expected* ({name: sha256}) as the run's inputs."""
    if not wait_until(lambda: server_inputs(server, run_id) == expected, LAND_TIMEOUT, 0.2):
        assert server_inputs(server, run_id) == expected


def make_tree(root: Path) -> dict[str, bytes]:
    """Write a small nested tree of random files under *root*; return {path: content}."""
    rng = random.Random(7)
    files = {
        "top.txt": b"top level\n",
        "a/one.dat": rng.randbytes(10_000),
        "a/b/two.dat": rng.randbytes(300_000),
        "a/b/c/three.csv": b"x,y\n1,2\n",
        "d e/space name.txt": b"spaces are allowed\n",
        "empty.log": b"",
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


# -- writing with tools, checked with the official client ---------------------------------------


def test_tools_write_files_the_official_client_downloads(
    server: DevServer, shared: Mount, run: RunDir, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    files = make_tree(source)
    numbers = numpy.arange(1000, dtype=numpy.float64)

    run_tool(["cp", source / "top.txt", run.input / "copied.txt"])
    run_tool(["cp", "-p", source / "a" / "one.dat", run.input / "kept-times.dat"])
    run_tool(["rsync", "-a", f"{source}/", run.input / "synced"])
    archive = tmp_path / "tree.tar"
    run_tool(["tar", "cf", archive, "-C", source, "."])
    (run.input / "unpacked").mkdir()
    run_tool(["tar", "xf", archive, "-C", run.input / "unpacked"])
    shutil.copy2(source / "a" / "b" / "two.dat", run.input / "copy2.dat")
    numpy.save(run.input / "numbers.npy", numbers)
    with open(run.input / "written.bin", "wb") as stream:
        stream.write(b"plain python\n" * 1000)

    expected = {
        "copied.txt": sha256(files["top.txt"]),
        "kept-times.dat": sha256(files["a/one.dat"]),
        "copy2.dat": sha256(files["a/b/two.dat"]),
        "numbers.npy": sha256_file(run.input / "numbers.npy"),
        "written.bin": sha256(b"plain python\n" * 1000),
    }
    for prefix in ("synced", "unpacked"):
        expected.update({f"{prefix}/{name}": sha256(data) for name, data in files.items()})
    # Every close() returned only once the server had the file: no waiting here.
    assert server_inputs(server, run.id) == expected
    assert official_inputs(server, tmp_path / "official", run.id) == expected
    assert numpy.array_equal(numpy.load(run.input / "numbers.npy"), numbers)
    # The mount shows the same tree, rsync left no temporary names, and the empty
    # directories made by rsync and tar are still there.
    assert tree_digests(run.input / "synced") == tree_digests(source)
    assert tree_digests(run.input / "unpacked") == tree_digests(source)
    assert not [
        name for name in server_inputs(server, run.id) if "/." in name or name.startswith(".")
    ]


def test_dd_of_300_mib_lands_byte_identical(
    server: DevServer, shared: Mount, run: RunDir, tmp_path: Path
) -> None:
    source = tmp_path / "random.bin"
    run_tool(["dd", "if=/dev/urandom", f"of={source}", "bs=1M", "count=300", "status=none"])
    expected = sha256_file(source)
    run_tool(["dd", f"if={source}", f"of={run.input / 'big.bin'}", "bs=1M", "status=none"])
    assert server_inputs(server, run.id) == {"big.bin": expected}
    assert sha256_file(run.input / "big.bin") == expected
    downloaded = official_inputs(server, tmp_path / "official", run.id)
    assert downloaded == {"big.bin": expected}


def published_uploads(mount: Mount, after: float) -> dict[str, int]:
    """The uploader's counters as the mount publishes them, once published after *after*."""
    data: dict[str, Any] | None = None

    def fresh() -> bool:
        nonlocal data
        data = counters.load(mount.path)
        return data is not None and data["updated"] > after

    assert wait_until(fresh, 3 * PUBLISH_INTERVAL, 0.2), "the mount published no counters"
    assert data is not None
    return dict(data["uploads"])


def test_cp_writes_1_mib_and_in_order_files_are_never_read_back(
    server: DevServer, shared: Mount, run: RunDir, tmp_path: Path
) -> None:
    # A file being written reports st_blksize 1 MiB, so cp writes 1 MiB at a time (FUSE's
    # largest write), and its sha256 is computed as the writes arrive: nothing is read back.
    source = tmp_path / "sixteen.bin"
    source.write_bytes(random.Random(16).randbytes(16 * MIB))
    before = published_uploads(shared, time.time())
    run_tool(["cp", source, run.input / "copied.bin"])
    after = published_uploads(shared, time.time())
    assert after["writes"] - before["writes"] == 16
    assert after["bytes_rehashed"] == before["bytes_rehashed"]
    # Written out of order: hashed again at close, from the spool.
    path = run.input / "backwards.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"b" * MIB, MIB)
        os.pwrite(fd, b"a" * MIB, 0)
        assert os.stat(path).st_blksize == MIB
    finally:
        os.close(fd)
    rehashed = published_uploads(shared, time.time())
    assert rehashed["writes"] - after["writes"] == 2
    assert rehashed["bytes_rehashed"] - after["bytes_rehashed"] == 2 * MIB
    assert server_inputs(server, run.id) == {
        "copied.bin": sha256_file(source),
        "backwards.bin": sha256(b"a" * MIB + b"b" * MIB),
    }
    # Uploaded artifacts report the read path's size again.
    assert os.stat(run.input / "copied.bin").st_blksize == PREFERRED_IO_SIZE


def test_the_same_content_is_uploaded_once(server: DevServer, shared: Mount, run: RunDir) -> None:
    other = new_run(server, shared)
    content = random.Random(11).randbytes(2 * MIB)
    server.reset_stats()
    (run.input / "first.bin").write_bytes(content)
    (run.input / "second.bin").write_bytes(content)
    (other.input / "again.bin").write_bytes(content)
    stats = server.stats()
    assert stats["uploads"] == 1
    assert stats["upload_bytes"] == len(content)
    assert server_inputs(server, run.id) == {
        "first.bin": sha256(content),
        "second.bin": sha256(content),
    }
    assert server_inputs(server, other.id) == {"again.bin": sha256(content)}


# -- what the mount shows while and after writing -------------------------------------------------


def test_own_writes_are_visible_at_once_and_keep_their_inode(
    server: DevServer, shared: Mount, run: RunDir
) -> None:
    path = run.input / "notes" / "today.txt"
    path.parent.mkdir()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"first line\n")
        staged = os.stat(path)
        assert staged.st_size == 11
        assert oct(staged.st_mode & 0o777) == "0o644"
        assert os.listdir(path.parent) == ["today.txt"]
        assert os.getxattr(path, "user.simvue.state") == b"staged"
        # A reader sees the bytes written so far.
        assert path.read_bytes() == b"first line\n"
        # A second writer shares the file; it is uploaded when the last one closes.
        second = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(second, b"second line\n")
        os.close(second)
        assert os.getxattr(path, "user.simvue.state") == b"staged"
    finally:
        os.close(fd)
    landed = os.stat(path)
    assert landed.st_ino == staged.st_ino
    assert oct(landed.st_mode & 0o777) == "0o644"  # its writer may overwrite it for 30 s
    record = server.run_artifacts(run.id, category="input")[0]
    assert record["name"] == "notes/today.txt"
    assert os.getxattr(path, "user.simvue.id") == record["id"].encode()
    time.sleep(1.5)  # past the metadata TTL: the server's listing now shows it
    assert os.listdir(path.parent) == ["today.txt"]
    assert os.stat(path).st_ino == staged.st_ino
    assert path.read_bytes() == b"first line\nsecond line\n"


def test_settled_files_are_forgotten_and_keep_their_inode(
    server: DevServer, tmp_path: Path
) -> None:
    # Issue 17: once a landed file settles (LANDED_RETENTION after it landed, then a
    # listing), the kernel is asked to drop its entry so that it forgets the inode and the
    # daemon its node; looked up again, the file has the same inode and content.
    spool = str(tmp_path / "spool")
    with mounted(server, tmp_path, "--spool-dir", spool, "--log-level", "DEBUG") as mount:
        run = new_run(server, mount)
        names = [f"settle-{i}.dat" for i in range(3)]
        inodes = {}
        for name in names:
            (run.input / name).write_bytes(name.encode() * 100)
            inodes[name] = os.stat(run.input / name).st_ino
        time.sleep(LANDED_RETENTION + 1.5)  # past the rename window and the metadata TTL
        assert not (run.input / "absent.dat").exists()  # a listing: the files settle

        def forgotten() -> set[int]:
            found = re.findall(
                r"inode (\d+) forgotten: its node is dropped", mount.log_file.read_text()
            )
            return {int(inode) for inode in found}

        assert wait_until(lambda: set(inodes.values()) <= forgotten(), 10, 0.2), forgotten()
        for name in names:
            assert os.stat(run.input / name).st_ino == inodes[name]
            assert (run.input / name).read_bytes() == name.encode() * 100
        assert sorted(os.listdir(run.input)) == names
        assert "Failed to submit invalidate_entry" not in mount.log_file.read_text()


def test_own_files_another_client_deletes_or_moves_go_with_the_next_listing(
    server: DevServer, tmp_path: Path
) -> None:
    """A file this mount wrote shows at once; once another client deleted its artifact, or
    attached it to the run in another category, the first listing asked after its landing
    leaves it out of ``input/``, and a new file can take its name (it stayed shown until the
    unmount: a phantom in the way of ``open(name, "xb")``, EEXIST, as in the model-based
    test). Metadata TTL 0: every lookup and listing asks the server. Nothing in ``input/``
    is looked up between a file's close and the server-side change, so no listing can
    account for the landing before the change (which is what made the failure depend on
    timing)."""
    with mounted(
        server, tmp_path, "--metadata-ttl", "0", "--spool-dir", str(tmp_path / "spool")
    ) as mount:
        run = new_run(server, mount)  # running: append-only

        def input_id(name: str) -> str:
            (record,) = server.run_artifacts(run.id, category="input", name=name)
            artifact_id: str = record["id"]
            return artifact_id

        (run.input / "moved.txt").write_bytes(b"moved to output\n")
        attach_artifact(server, run.id, input_id("moved.txt"), "output")
        (run.input / "deleted.txt").write_bytes(b"deleted by another client\n")
        server.api("DELETE", f"/artifacts/{input_id('deleted.txt')}").raise_for_status()
        # the model-based test's steps: written, overwritten within 30 s (a transient file
        # in a started run), then the new artifact attached as code
        (run.input / "overwritten.txt").write_bytes(b"first\n")
        (run.input / "overwritten.txt").write_bytes(b"second\n")
        attach_artifact(server, run.id, input_id("overwritten.txt"), "code")

        assert os.listdir(run.input) == []
        assert os.listdir(run.input.parent / "output") == ["moved.txt"]
        assert os.listdir(run.input.parent / "code") == ["overwritten.txt"]
        for name in ("moved.txt", "deleted.txt", "overwritten.txt"):
            with open(run.input / name, "xb") as stream:
                stream.write(name.encode())
        assert server_inputs(server, run.id) == {
            name: sha256(name.encode()) for name in ("moved.txt", "deleted.txt", "overwritten.txt")
        }
        assert sorted(os.listdir(run.input)) == ["deleted.txt", "moved.txt", "overwritten.txt"]


def test_random_writes_truncates_and_o_trunc_of_a_staged_file(
    server: DevServer, shared: Mount, run: RunDir
) -> None:
    path = run.input / "random.dat"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"B" * 5000, 10_000)
        os.pwrite(fd, b"A" * 100, 0)
        os.ftruncate(fd, 12_000)
        os.truncate(path, 14_000)
        os.pwrite(fd, b"C", 13_999)
        reader = os.open(path, os.O_RDONLY)
        os.close(reader)  # the flush of a read-only descriptor commits nothing
        assert os.getxattr(path, "user.simvue.state") == b"staged"
    finally:
        os.close(fd)
    content = bytearray(14_000)
    content[0:100] = b"A" * 100
    content[10_000:12_000] = b"B" * 2000
    content[13_999] = ord("C")
    assert server_inputs(server, run.id) == {"random.dat": sha256(bytes(content))}
    # O_TRUNC empties a file that is still being written.
    path = run.input / "rewritten.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"to be thrown away")
    second = os.open(path, os.O_RDONLY | os.O_TRUNC)
    os.close(second)
    os.write(fd, b"kept")
    os.close(fd)
    assert path.read_bytes() == b"\0" * 17 + b"kept"
    assert server_inputs(server, run.id)["rewritten.txt"] == sha256(b"\0" * 17 + b"kept")


def test_metadata_changes_are_accepted(shared: Mount, run: RunDir) -> None:
    path = run.input / "meta.txt"
    with open(path, "wb") as stream:
        os.fchmod(stream.fileno(), 0o600)
        os.fchown(stream.fileno(), os.getuid(), os.getgid())
        os.utime(stream.fileno(), (1_000_000_000, 1_000_000_000))
        stream.write(b"meta")
    os.chmod(path, 0o640)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    os.chmod(run.input, 0o700)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"  # recorded nowhere, modes stay sane
    assert oct(os.stat(run.input).st_mode & 0o777) == "0o755"
    assert errno_of(lambda: os.setxattr(path, "user.other", b"1")) == errno.ENOTSUP


def test_directories(shared: Mount, run: RunDir, server: DevServer) -> None:
    made = run.input / "empty" / "nested"
    made.mkdir(parents=True)
    assert os.listdir(run.input) == ["empty"]
    assert oct(os.stat(made).st_mode & 0o777) == "0o755"
    assert errno_of(lambda: os.rmdir(run.input / "empty")) == errno.ENOTEMPTY
    os.rmdir(made)
    os.rmdir(run.input / "empty")
    assert os.listdir(run.input) == []
    (run.input / "full").mkdir()
    (run.input / "full" / "file.txt").write_bytes(b"x")
    assert errno_of(lambda: os.rmdir(run.input / "full")) == errno.ENOTEMPTY
    assert errno_of(lambda: os.mkdir(run.input / "full")) == errno.EEXIST
    (run.input / "old").mkdir()
    os.rename(run.input / "old", run.input / "new")
    assert sorted(os.listdir(run.input)) == ["full", "new"]
    assert errno_of(lambda: os.rename(run.input / "full", run.input / "moved")) == errno.EACCES
    assert server_inputs(server, run.id) == {"full/file.txt": sha256(b"x")}


def test_refused_operations_return_the_documented_errno(
    server: DevServer, shared: Mount, run: RunDir
) -> None:
    runs = shared.path / "runs"
    output = runs / run.name / "output"
    uploaded = run.input / "uploaded.txt"
    uploaded.write_bytes(b"immutable\n")
    foreign = run.input / "foreign.txt"
    store_artifact(server, run.id, "foreign.txt", b"not written by this mount\n", "input")
    assert wait_until(foreign.exists, 5)
    log_start = shared.log_file.stat().st_size
    outcomes = {
        "create in output": errno_of(lambda: open(output / "x", "wb").close()),
        "mkdir in runs": errno_of(lambda: os.mkdir(runs / "new run")),
        "mkdir in a run": errno_of(lambda: os.mkdir(runs / run.name / "extra")),
        "rmdir input": errno_of(lambda: os.rmdir(run.input)),
        "bad name": errno_of(lambda: open(run.input / "data(1).csv", "wb").close()),
        "bad directory name": errno_of(lambda: os.mkdir(run.input / "tab\there")),
        # (a file this mount just uploaded could be: a tool's transient file, SEMANTICS.md)
        "overwrite": errno_of(lambda: open(foreign, "wb").close()),
        "append": errno_of(lambda: open(foreign, "ab").close()),
        "truncate": errno_of(lambda: os.truncate(foreign, 0)),
        "unlink": errno_of(lambda: os.unlink(foreign)),
        "rename onto": errno_of(lambda: os.rename(uploaded, foreign)),
        "rename foreign": errno_of(lambda: os.rename(foreign, run.input / "moved.txt")),
        "rename to output": errno_of(lambda: os.rename(uploaded, output / "x")),
        "symlink": errno_of(lambda: os.symlink("uploaded.txt", run.input / "link")),
        "hard link": errno_of(lambda: os.link(uploaded, run.input / "hard")),
        "fifo": errno_of(lambda: os.mkfifo(run.input / "fifo")),
    }
    assert outcomes == {
        "create in output": errno.EROFS,
        "mkdir in runs": errno.EROFS,
        "mkdir in a run": errno.EROFS,
        "rmdir input": errno.EROFS,
        "bad name": errno.EINVAL,
        "bad directory name": errno.EINVAL,
        "overwrite": errno.EACCES,
        "append": errno.EACCES,
        "truncate": errno.EACCES,
        "unlink": errno.EPERM,
        "rename onto": errno.EEXIST,
        "rename foreign": errno.EXDEV,
        "rename to output": errno.EROFS,
        "symlink": errno.EPERM,
        "hard link": errno.EPERM,
        "fifo": errno.EPERM,
    }
    assert uploaded.read_bytes() == b"immutable\n"
    assert server_inputs(server, run.id) == {
        "uploaded.txt": sha256(b"immutable\n"),
        "foreign.txt": sha256(b"not written by this mount\n"),
    }
    # A file this mount uploaded moments ago may still be removed (a tool's transient file).
    os.unlink(uploaded)
    assert server_inputs(server, run.id) == {"foreign.txt": sha256(b"not written by this mount\n")}
    with open(shared.log_file, encoding="utf-8") as log:
        log.seek(log_start)
        text = log.read()
    assert "refusing the name 'data(1).csv'" in text
    assert "^[a-zA-Z0-9\\-\\_\\s\\/\\.:]+$" in text


def test_writes_after_fsync_and_unlink_before_close(
    server: DevServer, shared: Mount, run: RunDir
) -> None:
    path = run.input / "synced.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"kept by fsync")
        os.fsync(fd)  # durable in the spool; the file goes on
        assert os.getxattr(path, "user.simvue.state") == b"staged"
        assert server_inputs(server, run.id) == {}
        os.write(fd, b", and more")
    finally:
        os.close(fd)
    assert server_inputs(server, run.id) == {"synced.txt": sha256(b"kept by fsync, and more")}
    gone = run.input / "gone.txt"
    fd = os.open(gone, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"never uploaded")
    os.fsync(fd)
    os.unlink(gone)
    assert not gone.exists()
    os.write(fd, b", still writable")
    os.close(fd)
    assert server_inputs(server, run.id) == {"synced.txt": sha256(b"kept by fsync, and more")}


def test_a_forked_child_closing_its_copy_does_not_freeze_the_file(
    server: DevServer, shared: Mount, run: RunDir
) -> None:
    path = run.input / "parent.log"
    with open(path, "wb", buffering=0) as stream:
        stream.write(b"before the child\n")
        # The child inherits the descriptor and closes it when it exits.
        run_tool([sys.executable, "-c", "pass"])
        subprocess.run(["true"], pass_fds=[stream.fileno()], check=True)
        stream.write(b"after the child\n")
        assert os.getxattr(path, "user.simvue.state") == b"staged"
    assert server_inputs(server, run.id) == {
        "parent.log": sha256(b"before the child\nafter the child\n")
    }
    # A shell redirection opens, dup2()s onto stdout and closes the original first.
    run_tool(["sh", "-c", f"printf 'one\\n' > '{run.input}/shell.txt'; true"])
    run_tool(["sh", "-c", f"exec > '{run.input}/exec.txt'; echo a; echo b"])
    assert server_inputs(server, run.id)["shell.txt"] == sha256(b"one\n")
    assert server_inputs(server, run.id)["exec.txt"] == sha256(b"a\nb\n")


# -- failures: close() reports them, nothing is lost, the file lands later --------------------


FAULTS = {
    "create fails": {"api_error_status": 500, "api_error_rate": 1.0, "api_error_route": CREATE},
    "storage upload fails": {"storage_error_status": 500, "storage_error_rate": 1.0},
    "storage answers BadDigest": {"bad_digest_count": 1000},
    "attach fails": {"api_error_status": 500, "api_error_rate": 1.0, "api_error_route": ATTACH},
}


def test_failed_uploads_are_reported_stay_visible_and_land_later(
    server: DevServer, shared: Mount, run: RunDir, xdg: Path
) -> None:
    contents = {
        f"{fault.split()[0]}-{index}.bin": random.Random(index).randbytes(200_000 + index)
        for index, fault in enumerate(FAULTS)
    }
    for (name, content), (fault, switches) in zip(contents.items(), FAULTS.items(), strict=True):
        server.set_faults(**switches)
        path = run.input / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, content)
        assert errno_of(lambda fd=fd: os.close(fd)) == errno.EIO, fault
        # Still there, readable, and saying why it is not uploaded yet.
        assert name in os.listdir(run.input), fault
        assert os.stat(path).st_size == len(content)
        assert path.read_bytes() == content
        shown = {name: os.getxattr(path, name).decode() for name in os.listxattr(path)}
        assert set(shown) == {
            f"user.simvue.{n}" for n in ("state", "pending", "checksum", "run_id")
        }
        assert shown["user.simvue.state"] == "pending"
        assert "failed attempt" in shown["user.simvue.pending"], (fault, shown)
        assert shown["user.simvue.checksum"] == sha256(content)
        assert shown["user.simvue.run_id"] == run.id
        status = simvuefs("status", shared.path).stdout.decode()
        assert name in status, status
        assert run.id in status
        assert "last error" in status
        server.clear_faults()
    wait_landed(server, run.id, {name: sha256(data) for name, data in contents.items()})
    for name, content in contents.items():
        assert (run.input / name).read_bytes() == content
        assert wait_until(lambda n=name: b"user.simvue.id" in list_xattrs(run.input / n), 5)
    assert "0 pending upload(s)" in simvuefs("status", shared.path).stdout.decode()


def list_xattrs(path: Path) -> list[bytes]:
    return [name.encode() for name in os.listxattr(path)]


def test_fsync_needs_no_server_and_close_reports_its_failure(
    server: DevServer, shared: Mount, run: RunDir
) -> None:
    path = run.input / "fsynced.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 1000)
        server.set_faults(storage_error_status=500, storage_error_count=1)
        os.fsync(fd)  # local: the server's fault does not reach it
    finally:
        assert errno_of(lambda: os.close(fd)) == errno.EIO
    wait_landed(server, run.id, {"fsynced.bin": sha256(b"x" * 1000)})


# -- unmounting, SIGTERM and SIGKILL ------------------------------------------------------------


def place(base: Path, name: str) -> Path:
    """A fresh directory for one of several mounts made by one test."""
    path = base / name
    path.mkdir()
    return path


def writer(path: Path, content: bytes, scratch: Path) -> subprocess.Popen[bytes]:
    """Start a process that writes *content* (via a file in *scratch*) to *path* and prints
    the outcome of its close(): ``closed`` or ``error <errno>``."""
    source = scratch / f"{path.name}.source"
    source.write_bytes(content)
    script = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "os.write(fd, open(sys.argv[2], 'rb').read())\n"
        "try:\n"
        "    os.close(fd)\n"
        "    print('closed')\n"
        "except OSError as exc:\n"
        "    print('error', exc.errno)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(source)], stdout=subprocess.PIPE
    )


def wait_for_upload_start(server: DevServer) -> None:
    """Wait until an upload's content request is stalled by the storage fault (the server's
    counters must have been reset before the upload began)."""
    assert wait_until(lambda: server.stats()["faults_injected"].get("stall", 0) > 0, 20, 0.1)


def test_sigkill_mid_upload_then_remount_lands_the_file(server: DevServer, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    content = random.Random(3).randbytes(5 * MIB)
    with mounted(server, place(tmp_path, "first"), "--spool-dir", str(spool)) as first:
        run = new_run(server, first)
        server.reset_stats()
        server.set_faults(stall_seconds=60, stall_where="storage_before")
        process = writer(run.input / "killed.bin", content, tmp_path)
        wait_for_upload_start(server)
        os.kill(first.pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=20)
        assert output.split()[0] == b"error", output
        server.clear_faults()
        status = simvuefs("status", first.path).stdout.decode()
        assert "killed.bin" in status
        assert "dead mount" in status
        simvuefs("unmount", first.path)
        assert not is_mounted(first.path)
    assert server_inputs(server, run.id) == {}
    with mounted(server, place(tmp_path, "second"), "--spool-dir", str(spool)):
        wait_landed(server, run.id, {"killed.bin": sha256(content)})
    assert official_inputs(server, tmp_path / "official", run.id) == {"killed.bin": sha256(content)}


def test_sigterm_waits_for_uploads_in_progress_then_leaves_the_rest_pending(
    server: DevServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    finished = b"finished during the wait\n" * 1000
    left = b"left for the next mount\n" * 1000
    # The upload is stalled 3 s, far less than --upload-wait: the mount exits once it lands
    # (well before the wait would end), and close() reports success.
    args = ("--spool-dir", str(spool), "--upload-wait", "60")
    with mounted(server, place(tmp_path, "first"), *args, foreground=True) as first:
        run = new_run(server, first)
        server.reset_stats()
        server.set_faults(stall_seconds=3, stall_where="storage_before")
        process = writer(run.input / "finished.txt", finished, tmp_path)
        wait_for_upload_start(server)
        assert first.process is not None
        first.process.send_signal(signal.SIGTERM)
        assert process.communicate(timeout=20)[0].split() == [b"closed"]
        first.process.wait(30)
    assert server_inputs(server, run.id) == {"finished.txt": sha256(finished)}

    args = ("--spool-dir", str(spool), "--upload-wait", "1")
    with mounted(server, place(tmp_path, "second"), *args, foreground=True) as second:
        server.reset_stats()
        server.set_faults(stall_seconds=60, stall_where="storage_before")
        process = writer(second.path / "runs" / run.name / "input" / "left.txt", left, tmp_path)
        wait_for_upload_start(server)
        assert second.process is not None
        second.process.send_signal(signal.SIGTERM)
        assert process.communicate(timeout=20)[0].split()[0] == b"error"
        second.process.wait(20)
        server.clear_faults()
    said = (tmp_path / "second" / "foreground.out").read_text()
    assert "1 upload(s) still pending" in said
    assert "left.txt" in simvuefs("status", "--spool-dir", spool).stdout.decode()
    with mounted(server, place(tmp_path, "third"), "--spool-dir", str(spool)):
        wait_landed(server, run.id, {"finished.txt": sha256(finished), "left.txt": sha256(left)})


def test_read_only_mount_refuses_writes(server: DevServer, tmp_path: Path) -> None:
    with mounted(server, tmp_path, "--read-only") as mount:
        run = new_run(server, mount)
        assert oct(os.stat(run.input).st_mode & 0o777) == "0o555"
        assert errno_of(lambda: open(run.input / "x", "wb").close()) == errno.EROFS
        assert errno_of(lambda: os.mkdir(run.input / "d")) == errno.EROFS
    assert server_inputs(server, run.id) == {}

"""Acceptance tests of changing inputs (SEMANTICS.md "Writing": editable and append-only).

A run that is ``created`` (not started) has an editable ``input/``: real tools overwrite,
append to, edit in place, rename onto and remove its inputs, and what the OFFICIAL client
downloads afterwards must be exactly the final files (names and sha256), with no transient
file (SQLite journals, git's locks, editors' and rsync's temporary names) left behind. A
started run stays append-only: changes get the documented errnos, and a tool that fails
leaves nothing. An artifact also attached to another run is never replaced or deleted. An
``fsync`` survives a SIGKILL of the daemon.

One devserver and one mount (metadata TTL 1 s) serve the module; each test makes its runs.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import attach_artifact, errno_of, server_inputs, sha256, store_artifact, tree_digests
from official_util import OfficialClient, official_inputs

from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted
from testbed.processes import run_tool, wait_until

_run_numbers = itertools.count(1)
LAND_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def mount(module_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    base = tmp_path_factory.mktemp("edit")
    with mounted(module_server, base, "--spool-dir", str(base / "spool")) as made:
        yield made


@dataclass
class RunDir:
    id: str
    name: str
    input: Path


def new_run(server: DevServer, mount: Mount, status: str = "created") -> RunDir:
    name = f"edits {next(_run_numbers)}"
    answer = server.api("POST", "/runs", json={"name": name, "folder": "/e", "status": status})
    answer.raise_for_status()
    made = RunDir(answer.json()["id"], name, mount.path / "runs" / name / "input")
    assert wait_until(made.input.exists, 5), f"{name} did not appear in the mount"
    return made


def seed(server: DevServer, run: RunDir, files: dict[str, bytes]) -> None:
    """Attach *files* to the run as inputs written elsewhere (not by this mount)."""
    for name, content in files.items():
        store_artifact(server, run.id, name, content, "input")
    assert wait_until(lambda: all((run.input / name).exists() for name in files), 5)


def set_status(server: DevServer, run: RunDir, status: str) -> None:
    server.api("PUT", f"/runs/{run.id}", json={"status": status}).raise_for_status()


def input_mode(run: RunDir) -> bytes:
    return os.getxattr(run.input, "user.simvue.input_mode")


# -- a created run: editable ---------------------------------------------------------------------


def test_edits_of_a_created_run_leave_exactly_the_final_files(
    server: DevServer, mount: Mount, tmp_path: Path
) -> None:
    run = new_run(server, mount)
    seed(
        server,
        run,
        {
            "params.nml": b"&run\n steps = 10\n/\n",
            "python.txt": b"old python\n",
            "copied.csv": b"a,b\n1,2\n",
            "log.txt": b"line 1\n",
            "cut.dat": b"0123456789",
            "vimmed.txt": b"alpha\nbeta\n",
            "gone/a.txt": b"a\n",
            "gone/deep/b.txt": b"b\n",
            "old name.txt": b"renamed\n",
            "target.txt": b"replaced by a rename\n",
        },
    )
    assert input_mode(run) == b"editable"
    assert oct(os.stat(run.input / "params.nml").st_mode & 0o777) == "0o644"
    source = tmp_path / "new.csv"
    source.write_bytes(b"a,b\n3,4\n")
    vimmed = run.input / "vimmed.txt"

    with open(run.input / "python.txt", "w") as stream:  # O_TRUNC on an input
        stream.write("new python\n")
    run_tool(["cp", source, run.input / "copied.csv"])
    run_tool(["sed", "-i", "s/steps = 10/steps = 20/", run.input / "params.nml"])
    run_tool(["sh", "-c", f"echo 'line 2' >> '{run.input}/log.txt'"])
    os.truncate(run.input / "cut.dat", 4)
    editors = [name for name in ("vim", "vim.tiny") if shutil.which(name)]
    assert editors, "scripts/install installs vim-tiny"
    for editor in editors:  # each saves the same file again: beta -> gamma, then unchanged
        run_tool([editor, "-es", "-u", "NONE", "-c", "%s/beta/gamma/e", "-c", "wq", vimmed])
    run_tool(["rm", "-r", run.input / "gone"])
    os.rename(run.input / "old name.txt", run.input / "new name.txt")
    (run.input / "mover.txt").write_bytes(b"moved onto target\n")
    os.rename(run.input / "mover.txt", run.input / "target.txt")
    with open(run.input / "params.nml", "r+b") as stream:  # rewrite in place
        stream.seek(1)
        stream.write(b"RUN")

    expected = {
        "params.nml": sha256(b"&RUN\n steps = 20\n/\n"),
        "python.txt": sha256(b"new python\n"),
        "copied.csv": sha256(b"a,b\n3,4\n"),
        "log.txt": sha256(b"line 1\nline 2\n"),
        "cut.dat": sha256(b"0123"),
        "vimmed.txt": sha256(b"alpha\ngamma\n"),
        "new name.txt": sha256(b"renamed\n"),
        "target.txt": sha256(b"moved onto target\n"),
    }
    assert tree_digests(run.input) == expected
    assert not (run.input / "gone").exists()
    assert server_inputs(server, run.id) == expected  # every close() waited for the server
    assert official_inputs(server, tmp_path / "official", run.id) == expected
    status = run_tool([sys.executable, "-m", "simvuefs", "status", mount.path]).stdout.decode()
    assert "replaced input/python.txt" in status, status
    assert "deleted input/gone/deep/b.txt" in status, status


def test_an_input_removed_while_being_edited_is_deleted(
    server: DevServer, mount: Mount, tmp_path: Path
) -> None:
    run = new_run(server, mount)
    seed(server, run, {"edited.txt": b"original\n", "kept.txt": b"kept\n"})
    with open(run.input / "edited.txt", "wb") as stream:  # an edit of the input ...
        stream.write(b"new content")
        os.unlink(run.input / "edited.txt")  # ... removed before its close
        assert sorted(os.listdir(run.input)) == ["kept.txt"]
    expected = {"kept.txt": sha256(b"kept\n")}
    # The name is gone on the server too, not only hidden by this mount (the edit is
    # discarded with it: nothing lands).
    assert tree_digests(run.input) == expected
    assert server_inputs(server, run.id) == expected
    assert official_inputs(server, tmp_path / "official", run.id) == expected


def make_repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
    for index in range(2):
        (repo / f"file{index}.txt").write_text(f"version {index}\n")
        run_tool(["git", "-C", repo, "init", "-q", "-b", "main"] if index == 0 else ["true"])
        run_tool(["git", "-C", repo, "add", "."], env=env)
        run_tool(["git", "-C", repo, "commit", "-q", "-m", f"commit {index}"], env=env)
    return repo


def test_sqlite_git_and_rsync_in_a_created_run(
    server: DevServer, mount: Mount, tmp_path: Path
) -> None:
    run = new_run(server, mount)
    seed(server, run, {"tree/same.txt": b"unchanged\n", "tree/changed.txt": b"old\n"})

    database = run.input / "db.sqlite"
    first = sqlite3.connect(database)
    with first:
        first.execute("create table t (x integer)")
    for value in range(3):  # several transactions, each its own connection
        with sqlite3.connect(database) as connection:
            connection.execute("insert into t values (?)", (value,))
        connection.close()
    first.close()  # the file ends with its last connection
    wal = run.input / "wal.sqlite"
    connection = sqlite3.connect(wal)
    assert connection.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
    for value in range(3):
        with connection:
            connection.execute("create table if not exists t (x integer)")
            connection.execute("insert into t values (?)", (value,))
    connection.close()

    repo = make_repo(tmp_path)
    run_tool(["git", "clone", "-q", repo, run.input / "clone"])
    assert run_tool(["git", "-C", run.input / "clone", "status", "--porcelain"]).stdout == b""

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "same.txt").write_bytes(b"unchanged\n")
    (tree / "changed.txt").write_bytes(b"new and longer\n")
    (tree / "added.txt").write_bytes(b"added\n")
    run_tool(["rsync", "-a", f"{tree}/", run.input / "tree"])

    for path in (database, wal):
        with sqlite3.connect(path) as check:
            assert sorted(row[0] for row in check.execute("select x from t")) == [0, 1, 2]
        check.close()
    on_server = server_inputs(server, run.id)
    local = tree_digests(run.input)
    assert on_server == local
    names = set(on_server)
    assert {"db.sqlite", "wal.sqlite", "tree/added.txt", "clone/file1.txt"} <= names
    junk = [name for name in names if name.endswith(("-journal", "-wal", "-shm", ".lock"))]
    assert junk == []
    assert not [name for name in names if "/." in name and not name.startswith("clone/.git")]
    assert on_server["tree/changed.txt"] == sha256(b"new and longer\n")
    assert official_inputs(server, tmp_path / "official", run.id) == local


# -- a started run: append-only --------------------------------------------------------------------


def test_a_started_run_is_append_only_and_failed_tools_leave_nothing(
    server: DevServer, mount: Mount, tmp_path: Path
) -> None:
    run = new_run(server, mount, status="running")
    seed(server, run, {"used.txt": b"what the run used\n"})
    used = run.input / "used.txt"
    assert input_mode(run) == b"append-only"
    assert oct(os.stat(used).st_mode & 0o777) == "0o444"
    (run.input / "new.txt").write_bytes(b"new files work\n")
    outcomes = {
        "overwrite": errno_of(lambda: open(used, "wb").close()),
        "append": errno_of(lambda: open(used, "ab").close()),
        "truncate": errno_of(lambda: os.truncate(used, 0)),
        "unlink": errno_of(lambda: os.unlink(used)),
        "rename onto": errno_of(lambda: os.rename(run.input / "new.txt", used)),
    }
    assert outcomes == {
        "overwrite": errno.EACCES,
        "append": errno.EACCES,
        "truncate": errno.EACCES,
        "unlink": errno.EPERM,
        "rename onto": errno.EEXIST,
    }
    assert run_tool(["sed", "-i", "s/used/changed/", used], check=False).returncode != 0
    # A transient file of a tool, removed by it at once, does not stay.
    (run.input / "scratch.tmp").write_bytes(b"transient\n")
    os.unlink(run.input / "scratch.tmp")
    with sqlite3.connect(run.input / "new.sqlite") as connection:
        connection.execute("create table t (x integer)")
        connection.execute("insert into t values (1)")
    connection.close()
    expected = {
        "used.txt": sha256(b"what the run used\n"),
        "new.txt": sha256(b"new files work\n"),
        "new.sqlite": sha256((run.input / "new.sqlite").read_bytes()),
    }
    assert server_inputs(server, run.id) == expected
    assert used.read_bytes() == b"what the run used\n"


def test_the_mode_follows_the_run_state(server: DevServer, mount: Mount) -> None:
    run = new_run(server, mount)
    seed(server, run, {"a.txt": b"a\n", "b.txt": b"b\n"})
    assert input_mode(run) == b"editable"
    with open(run.input / "a.txt", "wb") as stream:  # opened while created ...
        set_status(server, run, "running")
        assert wait_until(lambda: input_mode(run) == b"append-only", 5)
        stream.write(b"prepared before the start\n")  # ... completes as it started
    assert server_inputs(server, run.id) == {
        "a.txt": sha256(b"prepared before the start\n"),
        "b.txt": sha256(b"b\n"),
    }
    assert wait_until(lambda: os.stat(run.input / "b.txt").st_mode & 0o777 == 0o444, 5)
    assert errno_of(lambda: open(run.input / "b.txt", "ab").close()) == errno.EACCES
    # a.txt was just uploaded by this mount: a tool's transient file for 30 s, in any mode
    set_status(server, run, "completed")
    assert wait_until(lambda: input_mode(run) == b"append-only", 5)
    assert errno_of(lambda: os.unlink(run.input / "b.txt")) == errno.EPERM


# -- an artifact of two runs ---------------------------------------------------------------------


def test_an_artifact_attached_to_another_run_is_never_replaced_or_deleted(
    server: DevServer, mount: Mount, tmp_path: Path
) -> None:
    run = new_run(server, mount)
    other = new_run(server, mount)
    content = b"shared by two runs\n"
    source = tmp_path / "shared.txt"
    source.write_bytes(content)
    OfficialClient(server, tmp_path / "official").call(
        "attach_file_artifact",
        name="shared.txt",
        path=str(source),
        attach=[[run.id, "input"], [other.id, "input"]],
    )
    shared = run.input / "shared.txt"
    assert wait_until(shared.exists, 5)
    (run.input / "mine.txt").write_bytes(b"mine\n")
    log_start = mount.log_file.stat().st_size
    assert errno_of(lambda: open(shared, "wb").close()) == errno.EACCES
    assert errno_of(lambda: os.unlink(shared)) == errno.EPERM
    assert errno_of(lambda: os.rename(run.input / "mine.txt", shared)) == errno.EEXIST
    assert errno_of(lambda: os.rename(shared, run.input / "moved.txt")) == errno.EXDEV
    for each in (run, other):
        assert server_inputs(server, each.id)["shared.txt"] == sha256(content)
    with open(mount.log_file, encoding="utf-8") as log:
        log.seek(log_start)
        assert "attached to other runs too" in log.read()


def test_a_file_just_written_follows_one_rule_unless_another_run_holds_it(
    server: DevServer, mount: Mount
) -> None:
    """In a started run, a file this mount just uploaded may be overwritten, removed and
    renamed (a tool's transient file); once another run holds it too, none of them: the
    rename is refused (EXDEV) before anything changes, and the log names the other run."""
    run = new_run(server, mount, status="running")
    other = new_run(server, mount)
    scratch = run.input / "scratch.txt"
    scratch.write_bytes(b"first\n")
    assert oct(os.stat(scratch).st_mode & 0o777) == "0o644"  # the kernel lets its owner write
    with open(scratch, "wb") as stream:  # O_TRUNC of a file just written: replaced
        stream.write(b"second\n")
    assert server_inputs(server, run.id) == {"scratch.txt": sha256(b"second\n")}
    os.truncate(scratch, 3)
    assert server_inputs(server, run.id) == {"scratch.txt": sha256(b"sec")}
    os.rename(scratch, run.input / "moved.txt")
    os.unlink(run.input / "moved.txt")
    held = run.input / "b.dat"
    held.write_bytes(b"held by two runs\n")
    (record,) = server.run_artifacts(run.id, category="input")
    attach_artifact(server, other.id, record["id"], "input")
    log_start = mount.log_file.stat().st_size
    assert errno_of(lambda: os.rename(held, run.input / "c.dat")) == errno.EXDEV
    assert errno_of(lambda: open(held, "wb").close()) == errno.EACCES
    assert errno_of(lambda: os.unlink(held)) == errno.EPERM
    assert sorted(os.listdir(run.input)) == ["b.dat"]
    assert held.read_bytes() == b"held by two runs\n"
    assert server_inputs(server, run.id) == {"b.dat": sha256(b"held by two runs\n")}
    assert server_inputs(server, other.id) == {"b.dat": sha256(b"held by two runs\n")}
    with open(mount.log_file, encoding="utf-8") as log:
        log.seek(log_start)
        assert f"attached to other runs too ({other.id})" in log.read()


WRITER = """
import os, sys, time
stream = open(sys.argv[1], "wb")
stream.write(b"partial " * 1000)
stream.flush()
print("written", flush=True)
if sys.argv[2] == "exit":
    os._exit(0)  # no close(): the kernel closes it as the process ends
time.sleep(60)
"""


def test_a_writer_killed_half_way_uploads_nothing(
    server: DevServer, mount: Mount, tmp_path: Path
) -> None:
    """A writer killed by a signal before it closed its file leaves nothing on the server;
    the bytes are kept in the spool's abandoned/ (and ``simvuefs status`` says so). One
    that exits normally without closing still uploads."""
    run = new_run(server, mount)
    seed(server, run, {"input.txt": b"as it was\n"})
    abandoned = mount.path.parent / "spool" / "abandoned"
    kept_before = set(abandoned.iterdir()) if abandoned.is_dir() else set()
    cases = (("killed.bin", "kill"), ("input.txt", "kill"), ("exited.bin", "exit"))
    for name, how in cases:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, run.input / name, how], stdout=subprocess.PIPE
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"written\n"
        if how == "kill":
            writer.kill()
        assert writer.wait(30) == (-signal.SIGKILL if how == "kill" else 0)
        writer.stdout.close()
    assert server_inputs(server, run.id) == {
        "exited.bin": sha256(b"partial " * 1000),
        "input.txt": sha256(b"as it was\n"),  # an overwrite killed half-way changes nothing
    }
    assert sorted(os.listdir(run.input)) == ["exited.bin", "input.txt"]
    assert (run.input / "input.txt").read_bytes() == b"as it was\n"
    kept = set(abandoned.iterdir()) - kept_before
    assert [path.read_bytes() for path in kept] == [b"partial " * 1000] * 2
    status = run_tool([sys.executable, "-m", "simvuefs", "status", mount.path]).stdout.decode()
    assert f"are kept in {abandoned}" in status, status


# -- kill -9 between fsync and close -------------------------------------------------------------


def test_sigkill_after_fsync_lands_the_fsynced_content(server: DevServer, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with mounted(server, tmp_path / "first", "--spool-dir", str(spool)) as first:
        run = new_run(server, first)
        fd = os.open(run.input / "synced.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"first part\n")
        os.fsync(fd)
        os.write(fd, b"second part\n")  # not fsynced: may be lost
        os.fsync(fd)
        assert os.getxattr(run.input / "synced.bin", "user.simvue.state") == b"staged"
        os.write(fd, b"never fsynced\n")
        os.kill(first.pid, signal.SIGKILL)
        assert errno_of(lambda: os.close(fd)) != 0
        status = run_tool([sys.executable, "-m", "simvuefs", "status", first.path]).stdout
        assert b"synced.bin, still being written" in status, status
        subprocess.run(["fusermount3", "-u", "-z", str(first.path)], check=False)
    assert server_inputs(server, run.id) == {}
    with mounted(server, tmp_path / "second", "--spool-dir", str(spool)):
        expected = {"synced.bin": sha256(b"first part\nsecond part\n")}
        assert wait_until(lambda: server_inputs(server, run.id) == expected, LAND_TIMEOUT, 0.2)
    assert list((spool / "abandoned").iterdir())  # the bytes after the fsync are kept

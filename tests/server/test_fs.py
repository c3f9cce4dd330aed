"""Operations handlers awaited directly (no kernel), against a real devserver and client.

The pattern is s3ql's t3_fs_api: build the stack (SimvueClient -> Reader -> Tree ->
Operations), call ``await ops.lookup(...)`` with a duck-typed request context, and check
the answers. ``pyfuse3.readdir_reply`` needs a kernel request, so it is replaced by a
recorder (which can also refuse entries, as a full kernel buffer does).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import pytest
import trio
from devserver_util import SEEDED_LARGE_SIZE
from helpers import attach_artifact
from hypothesis import given
from hypothesis import strategies as st
from ops_util import CTX, POLICY, WCTX, open_ops, open_writable_ops

from simvuefs import localio
from simvuefs.backends.client import SimvueClient
from simvuefs.devserver.seed import ARTIFACTS, RUNS, artifact_content
from simvuefs.errors import LocalError, NotFound
from simvuefs.fuse.attrs import ARTIFACT_ATTR_TIMEOUT, PREFERRED_IO_SIZE
from simvuefs.fuse.fs import (
    WARNING_INTERVAL,
    fuse_errors,
    holds_for_writing,
    process_of,
)
from simvuefs.fuse.inodes import ROOT_INODE, InodeTable, NodeKind
from simvuefs.fuse.names import RUN_SLASH, name_artifacts, run_base_name
from simvuefs.fuse.overlay import LocalFiles, merge_entries, merge_entry
from simvuefs.models import Artifact, parse_timestamp
from simvuefs.write.landing import LANDED_RETENTION
from simvuefs.write.staged import FileState, StagedFile


@dataclass
class Entry:
    name: str
    attr: pyfuse3.EntryAttributes
    next_id: int


class ReaddirRecorder:
    """Stands in for ``pyfuse3.readdir_reply``; accepts *room* entries per readdir call."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.entries: list[Entry] = []
        self._left = room

    def __call__(self, token, name, attr, next_id):
        assert isinstance(name, bytes)
        assert next_id != 0
        if self._left is not None:
            if self._left == 0:
                return False
            self._left -= 1
        self.entries.append(Entry(os.fsdecode(name), attr, next_id))
        return True

    def refill(self) -> None:
        self._left = self.room


@pytest.fixture
def recorder(monkeypatch):
    recorder = ReaddirRecorder()
    monkeypatch.setattr(pyfuse3, "readdir_reply", recorder)
    return recorder


async def listdir(ops, inode, recorder) -> dict[str, pyfuse3.EntryAttributes]:
    """opendir + readdir + releasedir; return {name: attributes} without . and .."""
    recorder.entries.clear()
    fh = await ops.opendir(inode, CTX)
    await ops.readdir(fh, 0, None)
    await ops.releasedir(fh)
    return {e.name: e.attr for e in recorder.entries if e.name not in (".", "..")}


async def walk(ops, *names) -> pyfuse3.EntryAttributes:
    """Look up a path from the root, one component at a time."""
    attr = await ops.getattr(ROOT_INODE, CTX)
    for name in names:
        attr = await ops.lookup(attr.st_ino, os.fsencode(name), CTX)
    return attr


async def read_all(ops, inode, chunk=1 << 20) -> bytes:
    info = await ops.open(inode, os.O_RDONLY, CTX)
    parts = []
    offset = 0
    while True:
        data = await ops.read(info.fh, offset, chunk)
        if not data:
            break
        parts.append(data)
        offset += len(data)
    await ops.release(info.fh)
    return b"".join(parts)


def fuse_errno(excinfo) -> int:
    return excinfo.value.errno


def seeded_run(name):
    return next(run for run in RUNS if run.name == name)


def sweep_ids(server):
    return server.run_ids("sweep")  # oldest first


# -- helpers that put data on a fresh devserver ---------------------------------------------


def add_run(server, name, status="running") -> str:
    response = server.api("POST", "/runs", json={"name": name, "folder": "/t", "status": status})
    response.raise_for_status()
    return response.json()["id"]


def add_artifact(
    server, run_id, name, content, category="output", original_path="/x", size=None
) -> str:
    checksum = hashlib.sha256(content).hexdigest()
    body = {
        "name": name,
        "checksum": checksum,
        "size": len(content) if size is None else size,
        "original_path": original_path,
        "mime_type": "text/plain",
    }
    slot = server.api("POST", "/artifacts", json=body)
    slot.raise_for_status()
    answer = slot.json()
    if answer["url"]:
        fields = answer.get("fields") or {}
        if fields:
            upload = server.http.post(answer["url"], data=fields, files={"file": ("f", content)})
        else:
            upload = server.http.put(answer["url"], content=content)
        upload.raise_for_status()
        server.api("PUT", f"/artifacts/{answer['id']}", json={"uploaded": True}).raise_for_status()
    attach = server.api(
        "PUT", f"/runs/{run_id}/artifacts/{answer['id']}", json={"category": category}
    )
    attach.raise_for_status()
    return answer["id"]


# -- the tree ------------------------------------------------------------------------------


async def test_root_contains_runs_and_the_views(seeded_devserver, recorder):
    async with open_ops(seeded_devserver) as ops:
        fh = await ops.opendir(ROOT_INODE, CTX)
        await ops.readdir(fh, 0, None)
        await ops.releasedir(fh)
        names = [".", "..", "runs", "by-id", "folders", "tags"]
        assert [e.name for e in recorder.entries] == names
        listed = [e.attr for e in recorder.entries[2:]]
        assert all(stat.S_ISDIR(attr.st_mode) for attr in listed)
        assert ops.table.held() == {attr.st_ino: 1 for attr in listed}  # not . and ..


async def test_runs_directory_lists_every_run_with_mapped_names(seeded_devserver, recorder):
    older_sweep, newer_sweep = sweep_ids(seeded_devserver)
    async with open_ops(seeded_devserver) as ops:
        runs = await walk(ops, "runs")
        listed = await listdir(ops, runs.st_ino, recorder)
        expected = {run_base_name(run.name) for run in RUNS} | {f"sweep@{older_sweep}"}
        assert set(listed) == expected
        assert f"cfd{RUN_SLASH}mesh-study" in listed
        # The plain name is the newest run; the alias of every run can be looked up.
        assert listed["sweep"].st_ino == (await walk(ops, "runs", f"sweep@{newer_sweep}")).st_ino
        assert listed[f"sweep@{older_sweep}"].st_ino != listed["sweep"].st_ino
        for name, attr in listed.items():
            assert stat.S_ISDIR(attr.st_mode), name
            assert attr.st_mode & 0o777 == 0o555


async def test_run_directories_have_three_categories_and_nested_artifacts(
    seeded_devserver, recorder
):
    async with open_ops(seeded_devserver) as ops:
        run = await walk(ops, "runs", "demo run")
        assert set(await listdir(ops, run.st_ino, recorder)) == {"input", "output", "code"}
        queued = await walk(ops, "runs", "queued run")
        for category in ("input", "output", "code"):
            attr = await ops.lookup(queued.st_ino, category.encode(), CTX)
            assert await listdir(ops, attr.st_ino, recorder) == {}
        input_dir = await walk(ops, "runs", "demo run", "input")
        assert set(await listdir(ops, input_dir.st_ino, recorder)) == {"notes.txt", "system"}
        mesh = await walk(ops, "runs", "demo run", "input", "system", "mesh.dat")
        assert mesh.st_size == len(ARTIFACTS["mesh"].content)


async def test_lookup_errors(seeded_devserver):
    async with open_ops(seeded_devserver) as ops:
        runs = await walk(ops, "runs")
        # Names that do not exist: negative entries (inode 0) the kernel keeps for the TTL.
        for missing in (b"no such run", b"sweep@not-an-id", b"\xff\xfe not utf-8"):
            absent = await ops.lookup(runs.st_ino, missing, CTX)
            assert (absent.st_ino, absent.entry_timeout) == (0, 1.0)
        output = await walk(ops, "runs", "demo run", "output")
        absent = await ops.lookup(output.st_ino, b"no such file", CTX)
        assert (absent.st_ino, absent.entry_timeout) == (0, 60.0)  # a finished run's TTL
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.lookup(runs.st_ino, b"x" * 256, CTX)
        assert fuse_errno(excinfo) == errno.ENAMETOOLONG
        notes = await walk(ops, "runs", "demo run", "input", "notes.txt")
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.lookup(notes.st_ino, b"x", CTX)
        assert fuse_errno(excinfo) == errno.ENOTDIR
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.opendir(notes.st_ino, CTX)
        assert fuse_errno(excinfo) == errno.ENOTDIR
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.getattr(987654, CTX)
        assert fuse_errno(excinfo) == errno.ESTALE


async def test_dot_lookups(seeded_devserver):
    async with open_ops(seeded_devserver) as ops:
        run = await walk(ops, "runs", "demo run")
        runs = await walk(ops, "runs")
        assert (await ops.lookup(run.st_ino, b".", CTX)).st_ino == run.st_ino
        assert (await ops.lookup(run.st_ino, b"..", CTX)).st_ino == runs.st_ino
        assert (await ops.lookup(ROOT_INODE, b"..", CTX)).st_ino == ROOT_INODE


# -- lookup counts and readdir offsets ------------------------------------------------------


async def test_lookup_counts_follow_lookup_readdir_and_forget(seeded_devserver, recorder):
    async with open_ops(seeded_devserver) as ops:
        table = ops.table
        runs = await walk(ops, "runs")  # runs: 1
        for _ in range(3):
            demo = await ops.lookup(runs.st_ino, b"demo run", CTX)  # demo run: 3
        await ops.lookup(demo.st_ino, b".", CTX)  # demo run: 4
        await ops.lookup(demo.st_ino, b"..", CTX)  # runs: 2
        listed = await listdir(ops, demo.st_ino, recorder)  # each category: 1
        held = table.held()
        assert held[runs.st_ino] == 2
        assert held[demo.st_ino] == 4
        for attr in listed.values():
            assert held[attr.st_ino] == 1
        await ops.forget([(demo.st_ino, 4), (runs.st_ino, 1)])
        assert table.held().get(demo.st_ino) is None
        assert table.held()[runs.st_ino] == 1
        # forget never raises, even for nonsense
        await ops.forget([(999999, 1), (runs.st_ino, 50)])
        assert table.held().get(runs.st_ino) is None
        assert ops.forget_all() == 3
        assert table.held() == {}
        ops.init()


async def test_readdir_resumes_without_skipping_or_repeating(seeded_devserver, monkeypatch):
    async with open_ops(seeded_devserver) as ops:
        runs = await walk(ops, "runs")
        whole = ReaddirRecorder()
        monkeypatch.setattr(pyfuse3, "readdir_reply", whole)
        fh = await ops.opendir(runs.st_ino, CTX)
        await ops.readdir(fh, 0, None)
        await ops.releasedir(fh)
        assert len(whole.entries) == 2 + len(RUNS)
        ops.forget_all()

        partial = ReaddirRecorder(room=3)
        monkeypatch.setattr(pyfuse3, "readdir_reply", partial)
        fh = await ops.opendir(runs.st_ino, CTX)
        start = 0
        while True:
            before = len(partial.entries)
            await ops.readdir(fh, start, None)
            if len(partial.entries) == before:
                break
            start = partial.entries[-1].next_id
            partial.refill()
        await ops.releasedir(fh)
        assert [e.name for e in partial.entries] == [e.name for e in whole.entries]
        # An entry refused by the kernel is not counted: every run was counted exactly once.
        counted = ops.table.held()
        assert sorted(counted.values()) == [1] * len(RUNS)
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.readdir(fh, 0, None)
        assert fuse_errno(excinfo) == errno.EBADF


async def test_children_are_listed_in_inode_order(seeded_devserver, recorder):
    async with open_ops(seeded_devserver) as ops:
        output = await walk(ops, "runs", "demo run", "output")
        inodes = [attr.st_ino for attr in (await listdir(ops, output.st_ino, recorder)).values()]
        assert inodes == sorted(inodes)
        again = [attr.st_ino for attr in (await listdir(ops, output.st_ino, recorder)).values()]
        assert again == inodes


# -- attributes -------------------------------------------------------------------------------


def ns(when) -> int:
    return round(when.timestamp() * 1e6) * 1000


async def test_file_attributes(seeded_devserver):
    run_id = seeded_devserver.run_ids("demo run")[0]
    record = seeded_devserver.run_artifacts(run_id, name="results.csv")[0]
    async with open_ops(seeded_devserver, metadata_ttl=2.0, finished_run_ttl=30.0) as ops:
        attr = await walk(ops, "runs", "demo run", "output", "results.csv")
        content = ARTIFACTS["results"].content
        assert attr.st_mode == stat.S_IFREG | 0o444
        assert attr.st_size == len(content)
        assert attr.st_blocks == -(-len(content) // 512)
        assert attr.st_blksize == PREFERRED_IO_SIZE
        assert (attr.st_uid, attr.st_gid) == (4321, 8765)
        assert attr.st_nlink == 1
        created = ns(parse_timestamp(record["created"]))
        assert attr.st_mtime_ns == attr.st_ctime_ns == attr.st_atime_ns == created
        assert attr.attr_timeout == ARTIFACT_ATTR_TIMEOUT
        assert attr.entry_timeout == 30.0  # the run is completed: finished_run_ttl
        again = await ops.getattr(attr.st_ino, CTX)
        assert again.st_size == attr.st_size
        assert again.st_ino == attr.st_ino


async def test_directory_attributes(seeded_devserver):
    async with open_ops(seeded_devserver, metadata_ttl=2.0) as ops:
        run = await walk(ops, "runs", "cfd/mesh-study".replace("/", RUN_SLASH))
        assert run.st_mode == stat.S_IFDIR | 0o555
        assert run.st_mtime_ns == ns(seeded_run("cfd/mesh-study").created)
        assert run.entry_timeout == run.attr_timeout == 2.0
        root = await ops.getattr(ROOT_INODE, CTX)
        assert root.st_mtime_ns == POLICY.mount_time_ns
        assert stat.S_ISDIR(root.st_mode)


async def test_indefinite_ttl_is_capped_for_the_kernel(seeded_devserver):
    async with open_ops(seeded_devserver, metadata_ttl=float("inf")) as ops:
        run = await walk(ops, "runs", "demo run")
        assert run.entry_timeout == 86400.0


async def test_object_artifact_size_is_the_real_content_length(devserver, recorder):
    run_id = add_run(devserver, "objects")
    content = b"pickled bytes \x00\x01\x02"
    # The server size is not content length + 33 here: only the storage answer is trusted.
    add_artifact(devserver, run_id, "obj", content, original_path="", size=len(content) + 100)
    async with open_ops(devserver) as ops:
        output = await walk(ops, "runs", "objects", "output")
        listed = await listdir(ops, output.st_ino, recorder)
        assert listed["obj"].st_size == len(content) + 100 - 33  # estimate, not trusted...
        assert listed["obj"].attr_timeout == 0  # ...so the kernel asks again
        devserver.reset_stats()
        attr = await ops.lookup(output.st_ino, b"obj", CTX)
        assert attr.st_size == len(content)
        assert attr.attr_timeout == ARTIFACT_ATTR_TIMEOUT
        assert await read_all(ops, attr.st_ino) == content
        for _ in range(3):
            assert (await ops.getattr(attr.st_ino, CTX)).st_size == len(content)
            await ops.lookup(output.st_ino, b"obj", CTX)
        listed = await listdir(ops, output.st_ino, recorder)
        assert listed["obj"].st_size == len(content)
        assert listed["obj"].attr_timeout == ARTIFACT_ATTR_TIMEOUT
        assert devserver.stats()["storage_gets"] == 2  # one size probe, one content read


async def test_listing_a_category_costs_one_request(devserver, recorder):
    run_id = add_run(devserver, "many")
    names = [f"file{i:02d}.txt" for i in range(20)] + [f"sub/dir/n{i}.dat" for i in range(10)]
    for name in names:
        add_artifact(devserver, run_id, name, name.encode())
    async with open_ops(devserver, metadata_ttl=60.0) as ops:
        run = await walk(ops, "runs", "many")
        devserver.reset_stats()
        output = await ops.lookup(run.st_ino, b"output", CTX)
        listed = await listdir(ops, output.st_ino, recorder)
        assert set(listed) == {f"file{i:02d}.txt" for i in range(20)} | {"sub"}
        for name, attr in listed.items():
            assert (await ops.getattr(attr.st_ino, CTX)).st_size == attr.st_size
            await ops.lookup(output.st_ino, name.encode(), CTX)
        sub = await ops.lookup(output.st_ino, b"sub", CTX)
        deeper = await ops.lookup(sub.st_ino, b"dir", CTX)
        nested = await listdir(ops, deeper.st_ino, recorder)
        assert {name: attr.st_size for name, attr in nested.items()} == {
            f"n{i}.dat": len(f"sub/dir/n{i}.dat") for i in range(10)
        }
        requests = devserver.stats()["api_requests"]
        assert requests == {"GET /api/runs/{run_id}/artifacts": 1}


async def test_listings_refresh_after_the_ttl(devserver, recorder):
    run_id = add_run(devserver, "growing")
    add_artifact(devserver, run_id, "first.txt", b"1")
    async with open_ops(devserver, metadata_ttl=0.3) as ops:
        output = await walk(ops, "runs", "growing", "output")
        assert set(await listdir(ops, output.st_ino, recorder)) == {"first.txt"}
        first_inode = (await ops.lookup(output.st_ino, b"first.txt", CTX)).st_ino
        add_artifact(devserver, run_id, "second.txt", b"2")
        add_run(devserver, "late")
        await trio.sleep(0.4)
        listed = await listdir(ops, output.st_ino, recorder)
        assert set(listed) == {"first.txt", "second.txt"}
        assert listed["first.txt"].st_ino == first_inode
        runs = await walk(ops, "runs")
        assert "late" in await listdir(ops, runs.st_ino, recorder)


async def test_hostile_names(devserver, recorder):
    plain = add_run(devserver, "plain")
    for name in (".", "..", "a/b", "tab\there", "n" * 300):
        add_run(devserver, name)
    for name, content in [
        (".", b"dot"),
        ("..", b"dotdot"),
        ("x/../y", b"up"),
        ("a//b", b"double slash"),
        ("/abs", b"leading slash"),
        ("f", b"file"),
        ("f/g", b"under f"),
        ("e" * 256, b"too long"),
        ("ctl\x01char", b"control"),
    ]:
        add_artifact(devserver, plain, name, content)
    ids = {name: devserver.run_ids(name)[0] for name in (".", "..")}
    async with open_ops(devserver) as ops:
        runs = await walk(ops, "runs")
        listed = set(await listdir(ops, runs.st_ino, recorder))
        assert listed == {
            "plain",
            f".@{ids['.']}",
            f"..@{ids['..']}",
            f"a{RUN_SLASH}b",
            "tab\ufffdhere",
        }
        output = await walk(ops, "runs", "plain", "output")
        names = await listdir(ops, output.st_ino, recorder)
        f_id = next(a["id"] for a in devserver.run_artifacts(plain) if a["name"] == "f")
        assert set(names) == {"a", "abs", "f", f"f@{f_id}", "ctl\ufffdchar"}
        assert await read_all(ops, names[f"f@{f_id}"].st_ino) == b"file"
        b = await walk(ops, "runs", "plain", "output", "a", "b")
        assert await read_all(ops, b.st_ino) == b"double slash"
        g = await walk(ops, "runs", "plain", "output", "f", "g")
        assert await read_all(ops, g.st_ino) == b"under f"


# -- reading ------------------------------------------------------------------------------


async def test_read_whole_files_and_ranges(seeded_devserver):
    async with open_ops(seeded_devserver) as ops:
        results = await walk(ops, "runs", "demo run", "output", "results.csv")
        assert await read_all(ops, results.st_ino, chunk=7) == ARTIFACTS["results"].content
        large = await walk(ops, "runs", "demo run", "output", "large.bin")
        assert large.st_size == SEEDED_LARGE_SIZE
        info = await ops.open(large.st_ino, os.O_RDONLY, CTX)
        assert info.keep_cache
        assert not info.direct_io
        for offset, size in [(0, 4096), (5_000_000, 131072), (SEEDED_LARGE_SIZE - 10, 4096)]:
            expected = artifact_content("large", SEEDED_LARGE_SIZE)[offset : offset + size]
            assert await ops.read(info.fh, offset, size) == expected
        assert await ops.read(info.fh, SEEDED_LARGE_SIZE, 4096) == b""
        await ops.release(info.fh)
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.read(info.fh, 0, 10)
        assert fuse_errno(excinfo) == errno.EBADF
        empty = await walk(ops, "runs", "demo run", "output", "empty.log")
        assert empty.st_size == 0
        assert await read_all(ops, empty.st_ino) == b""


async def test_content_matches_the_server_checksum(seeded_devserver):
    run_id = seeded_devserver.run_ids("demo run")[0]
    async with open_ops(seeded_devserver) as ops:
        for record in seeded_devserver.run_artifacts(run_id, category="output"):
            attr = await walk(ops, "runs", "demo run", "output", *record["name"].split("/"))
            data = await read_all(ops, attr.st_ino)
            assert hashlib.sha256(data).hexdigest() == record["checksum"], record["name"]
            assert attr.st_size == len(data)


async def test_open_refuses_writing_and_directories(seeded_devserver):
    async with open_ops(seeded_devserver) as ops:
        notes = await walk(ops, "runs", "demo run", "input", "notes.txt")
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
            with pytest.raises(pyfuse3.FUSEError) as excinfo:
                await ops.open(notes.st_ino, flags, CTX)
            assert fuse_errno(excinfo) == errno.EROFS
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.open(ROOT_INODE, os.O_RDONLY, CTX)
        assert fuse_errno(excinfo) == errno.EISDIR


WRITE_REQUESTS = {
    "setattr": lambda ops, i: ops.setattr(i, pyfuse3.EntryAttributes(), None, None, CTX),
    "mknod": lambda ops, i: ops.mknod(i, b"n", stat.S_IFREG | 0o644, 0, CTX),
    "mkdir": lambda ops, i: ops.mkdir(i, b"d", 0o755, CTX),
    "unlink": lambda ops, i: ops.unlink(i, b"notes.txt", CTX),
    "rmdir": lambda ops, i: ops.rmdir(i, b"system", CTX),
    "symlink": lambda ops, i: ops.symlink(i, b"l", b"target", CTX),
    "rename": lambda ops, i: ops.rename(i, b"notes.txt", i, b"other", 0, CTX),
    "link": lambda ops, i: ops.link(i, i, b"l", CTX),
    "create": lambda ops, i: ops.create(i, b"new", 0o644, os.O_WRONLY, CTX),
    "write": lambda ops, i: ops.write(1, 0, b"data"),
    "setxattr": lambda ops, i: ops.setxattr(i, b"user.x", b"v", CTX),
    "removexattr": lambda ops, i: ops.removexattr(i, b"user.simvue.id", CTX),
}


@pytest.mark.parametrize("request_name", sorted(WRITE_REQUESTS))
async def test_write_type_requests_fail_with_erofs(seeded_devserver, request_name):
    async with open_ops(seeded_devserver) as ops:
        input_dir = await walk(ops, "runs", "demo run", "input")
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await WRITE_REQUESTS[request_name](ops, input_dir.st_ino)
        assert fuse_errno(excinfo) == errno.EROFS


async def test_noop_requests_succeed(seeded_devserver):
    async with open_ops(seeded_devserver) as ops:
        notes = await walk(ops, "runs", "demo run", "input", "notes.txt")
        info = await ops.open(notes.st_ino, os.O_RDONLY, CTX)
        await ops.flush(info.fh)
        await ops.fsync(info.fh, True)
        await ops.release(info.fh)
        fh = await ops.opendir(ROOT_INODE, CTX)
        await ops.fsyncdir(fh, False)
        await ops.releasedir(fh)
        data = await ops.statfs(CTX)
        assert data.f_namemax == 255
        assert data.f_bsize == 1 << 20


# -- extended attributes ------------------------------------------------------------------


async def test_extended_attributes(seeded_devserver):
    run_id = seeded_devserver.run_ids("demo run")[0]
    record = seeded_devserver.run_artifacts(run_id, name="summary")[0]
    async with open_ops(seeded_devserver) as ops:
        summary = await walk(ops, "runs", "demo run", "output", "summary")
        names = set(await ops.listxattr(summary.st_ino, CTX))
        expected = {
            b"user.simvue.id": record["id"],
            b"user.simvue.checksum": record["checksum"],
            b"user.simvue.mime_type": "application/json",
            b"user.simvue.original_path": "",
            b"user.simvue.run_id": run_id,
        }
        assert names == set(expected)
        for name, value in expected.items():
            assert await ops.getxattr(summary.st_ino, name, CTX) == value.encode()
        run = await walk(ops, "runs", "demo run")
        assert await ops.getxattr(run.st_ino, b"user.simvue.id", CTX) == run_id.encode()
        assert await ops.getxattr(run.st_ino, b"user.simvue.status", CTX) == b"completed"
        assert await ops.getxattr(run.st_ino, b"user.simvue.folder", CTX) == b"/demo"
        assert set(await ops.listxattr(run.st_ino, CTX)) == {
            b"user.simvue." + name
            for name in (b"id", b"name", b"status", b"folder", b"tags", b"created", b"started")
            + (b"endtime", b"description")
        }
        assert await ops.getxattr(run.st_ino, b"user.simvue.tags", CTX) == b"demo,baseline"
        for inode, name in [(summary.st_ino, b"user.other"), (ROOT_INODE, b"user.simvue.id")]:
            with pytest.raises(pyfuse3.FUSEError) as excinfo:
                await ops.getxattr(inode, name, CTX)
            assert fuse_errno(excinfo) == errno.ENODATA
        assert list(await ops.listxattr(ROOT_INODE, CTX)) == []


async def test_run_status_xattr_follows_the_server(devserver):
    run_id = add_run(devserver, "live")
    async with open_ops(devserver, metadata_ttl=0.2) as ops:
        run = await walk(ops, "runs", "live")
        assert await ops.getxattr(run.st_ino, b"user.simvue.status", CTX) == b"running"
        devserver.api("PUT", f"/runs/{run_id}", json={"status": "completed"}).raise_for_status()
        await trio.sleep(0.3)
        assert await ops.getxattr(run.st_ino, b"user.simvue.status", CTX) == b"completed"


async def test_foreign_xattr_names_are_answered_without_the_server(devserver):
    """ls -l asks every file for security.selinux and ACLs: no refresh, even with the run's
    listing expired and the server failing."""
    add_run(devserver, "live")
    async with open_ops(devserver, metadata_ttl=0.1) as ops:
        run = await walk(ops, "runs", "live")
        await trio.sleep(0.2)
        devserver.set_faults(api_error_status=500, api_error_rate=1.0)
        try:
            for name in (b"security.selinux", b"system.posix_acl_access", b"trusted.x"):
                with pytest.raises(pyfuse3.FUSEError) as excinfo:
                    await ops.getxattr(run.st_ino, name, CTX)
                assert fuse_errno(excinfo) == errno.ENODATA
            with pytest.raises(pyfuse3.FUSEError) as excinfo:
                await ops.getxattr(run.st_ino, b"user.simvue.status", CTX)
            assert fuse_errno(excinfo) == errno.EIO
        finally:
            devserver.clear_faults()


# -- the error boundary --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        ({"api_error_status": 500, "api_error_rate": 1.0}, errno.EIO),
        ({"api_error_status": 401, "api_error_rate": 1.0}, errno.EACCES),
        ({"api_error_status": 404, "api_error_rate": 1.0}, errno.ENOENT),
    ],
)
async def test_server_errors_become_errnos(seeded_devserver, switches, expected):
    async with open_ops(seeded_devserver, retry_attempts=1) as ops:
        runs = await walk(ops, "runs")
        seeded_devserver.set_faults(**switches)
        try:
            with pytest.raises(pyfuse3.FUSEError) as excinfo:
                await ops.opendir(runs.st_ino, CTX)
        finally:
            seeded_devserver.clear_faults()
        assert fuse_errno(excinfo) == expected
        # Errors are not cached: the same request works once the server recovers.
        fh = await ops.opendir(runs.st_ino, CTX)
        await ops.releasedir(fh)


async def test_stalled_server_times_out_within_the_deadline(seeded_devserver):
    async with open_ops(seeded_devserver, request_timeout=0.5, read_timeout=0.5) as ops:
        runs = await walk(ops, "runs")
        # The stall (5 s) outlasts the deadline: ETIMEDOUT can only come from the deadline.
        seeded_devserver.set_faults(stall_seconds=5, stall_where="api")
        try:
            with pytest.raises(pyfuse3.FUSEError) as excinfo:
                await ops.lookup(runs.st_ino, b"demo run", CTX)
        finally:
            seeded_devserver.clear_faults()
        assert fuse_errno(excinfo) == errno.ETIMEDOUT


async def test_boundary_passes_fuse_errors_and_maps_the_rest(caplog):
    @fuse_errors
    async def raising(exc):
        raise exc

    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await raising(pyfuse3.FUSEError(errno.EXDEV))
    assert fuse_errno(excinfo) == errno.EXDEV
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await raising(NotFound("gone", status=404))
    assert fuse_errno(excinfo) == errno.ENOENT
    with (
        caplog.at_level(logging.ERROR, logger="simvuefs.fuse.fs"),
        pytest.raises(pyfuse3.FUSEError) as excinfo,
    ):
        await raising(KeyError("bug"))
    assert fuse_errno(excinfo) == errno.EIO
    [record] = caplog.records
    assert record.exc_info is not None
    assert "raising" in record.getMessage()
    with pytest.raises(KeyboardInterrupt):
        await raising(KeyboardInterrupt())


async def test_boundary_warns_once_per_handler_error_and_errno(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(localio.time, "monotonic", lambda: now[0])

    @fuse_errors
    async def rate_limited_handler(exc):
        raise exc

    async def levels(*errors):
        caplog.clear()
        for exc in errors:
            with pytest.raises(pyfuse3.FUSEError):
                await rate_limited_handler(exc)
        return [r.levelno for r in caplog.records if "rate_limited_handler" in r.getMessage()]

    with caplog.at_level(logging.DEBUG, logger="simvuefs.fuse.fs"):
        full = LocalError("disk full", errno=errno.ENOSPC)
        denied = LocalError("denied", errno=errno.EACCES)
        gone = NotFound("gone", status=404)
        assert await levels(full, full, denied, gone, gone) == [
            logging.WARNING,
            logging.DEBUG,
            logging.WARNING,  # another errno
            logging.DEBUG,  # NotFound is routine: never a warning
            logging.DEBUG,
        ]
        now[0] += WARNING_INTERVAL
        assert await levels(full) == [logging.WARNING]


async def test_boundary_lets_cancellation_through():
    @fuse_errors
    async def slow():
        await trio.sleep_forever()

    with trio.move_on_after(0.05) as scope:
        await slow()
    assert scope.cancelled_caught


# -- writing (a writable tree: Operations with an Uploader) ------------------------------------


async def write_file(ops, parent_inode, name, content) -> pyfuse3.EntryAttributes:
    """create + write + flush + release, as close() after writing does."""
    info, attr = await ops.create(parent_inode, os.fsencode(name), 0o644, os.O_WRONLY, WCTX)
    if content:
        assert await ops.write(info.fh, 0, content) == len(content)
    await ops.flush(info.fh)
    await ops.release(info.fh)
    return attr


def input_names(server, run_id) -> dict[str, str]:
    return {a["name"]: a["checksum"] for a in server.run_artifacts(run_id, category="input")}


async def test_written_files_show_at_once_and_land_in_place(devserver, recorder, tmp_path):
    run_id = add_run(devserver, "w")
    add_artifact(devserver, run_id, "old.txt", b"from the server", category="input")
    async with open_writable_ops(devserver, tmp_path / "spool") as ops:
        inputs = await walk(ops, "runs", "w", "input")
        assert stat.S_IMODE(inputs.st_mode) == 0o755
        output = await walk(ops, "runs", "w", "output")
        assert stat.S_IMODE(output.st_mode) == 0o555
        info, attr = await ops.create(inputs.st_ino, b"new.txt", 0o644, os.O_WRONLY, WCTX)
        assert stat.S_IMODE(attr.st_mode) == 0o644
        assert attr.attr_timeout == 0
        await ops.write(info.fh, 0, b"hello")
        listed = await listdir(ops, inputs.st_ino, recorder)
        assert sorted(listed) == ["new.txt", "old.txt"]
        assert listed["new.txt"].st_size == 5
        assert listed["new.txt"].st_ino == attr.st_ino
        assert await ops.getxattr(attr.st_ino, b"user.simvue.state", WCTX) == b"staged"
        assert await ops.read(info.fh, 0, 100) == b"hello"
        await ops.flush(info.fh)
        landed = await ops.getattr(attr.st_ino, WCTX)
        # its writer may still overwrite it for LANDED_RETENTION s (a tool's transient file):
        # writable, and its attributes valid no longer than that
        assert stat.S_IMODE(landed.st_mode) == 0o644
        assert 0 < landed.attr_timeout <= LANDED_RETENTION
        # still readable through the handle opened for writing
        assert await ops.read(info.fh, 0, 100) == b"hello"
        await ops.release(info.fh)
        assert input_names(devserver, run_id)["new.txt"] == hashlib.sha256(b"hello").hexdigest()
        artifact_id = (await ops.getxattr(attr.st_ino, b"user.simvue.id", WCTX)).decode()
        assert artifact_id == devserver.run_artifacts(run_id, name="new.txt")[0]["id"]
        # the server's listing, once fetched again, gives the same inode
        await trio.sleep(1.1)
        again = await listdir(ops, inputs.st_ino, recorder)
        assert again["new.txt"].st_ino == attr.st_ino
        assert (await ops.lookup(inputs.st_ino, b"new.txt", WCTX)).st_ino == attr.st_ino


async def test_write_refusals(devserver, tmp_path):
    run_id = add_run(devserver, "w")
    add_artifact(devserver, run_id, "old.txt", b"old", category="input")
    async with open_writable_ops(devserver, tmp_path / "spool") as ops:
        inputs = await walk(ops, "runs", "w", "input")
        output = await walk(ops, "runs", "w", "output")
        run = await walk(ops, "runs", "w")
        old = await walk(ops, "runs", "w", "input", "old.txt")
        refused = {
            "create in output": ops.create(output.st_ino, b"x", 0o644, os.O_WRONLY, WCTX),
            "mkdir in a run": ops.mkdir(run.st_ino, b"x", 0o755, WCTX),
            "bad name": ops.create(inputs.st_ino, b"a;b", 0o644, os.O_WRONLY, WCTX),
            "bad dir name": ops.mkdir(inputs.st_ino, b"..x\n", 0o755, WCTX),
            "existing name": ops.create(inputs.st_ino, b"old.txt", 0o644, os.O_WRONLY, WCTX),
            "open artifact for writing": ops.open(old.st_ino, os.O_WRONLY, WCTX),
            "truncate artifact": ops.setattr(old.st_ino, size_attr(0), size_fields(), None, WCTX),
            "unlink artifact": ops.unlink(inputs.st_ino, b"old.txt", WCTX),
            "rename artifact": ops.rename(inputs.st_ino, b"old.txt", inputs.st_ino, b"n", 0, WCTX),
            "exchange": ops.rename(inputs.st_ino, b"old.txt", inputs.st_ino, b"n", 2, WCTX),
            "setxattr": ops.setxattr(old.st_ino, b"user.x", b"1", WCTX),
            "setxattr in output": ops.setxattr(output.st_ino, b"user.x", b"1", WCTX),
            "symlink": ops.symlink(inputs.st_ino, b"l", b"old.txt", WCTX),
            "rmdir input": ops.rmdir(run.st_ino, b"input", WCTX),
        }
        outcomes = {}
        for what, call in refused.items():
            with pytest.raises(pyfuse3.FUSEError) as excinfo:
                await call
            outcomes[what] = errno.errorcode[fuse_errno(excinfo)]
        assert outcomes == {
            "create in output": "EROFS",
            "mkdir in a run": "EROFS",
            "bad name": "EINVAL",
            "bad dir name": "EINVAL",
            "existing name": "EEXIST",
            "open artifact for writing": "EACCES",
            "truncate artifact": "EACCES",
            "unlink artifact": "EPERM",
            "rename artifact": "EXDEV",
            "exchange": "EINVAL",
            "setxattr": "ENOTSUP",
            "setxattr in output": "EROFS",
            "symlink": "EPERM",
            "rmdir input": "EROFS",
        }
        # setting the same size, modes and times is fine
        await ops.setattr(old.st_ino, size_attr(3), size_fields(), None, WCTX)
    assert list(input_names(devserver, run_id)) == ["old.txt"]


def size_attr(size):
    attr = pyfuse3.EntryAttributes()
    attr.st_size = size
    return attr


def size_fields():
    """Stands for pyfuse3.SetattrFields (read-only attributes) with only the size set."""
    return SimpleNamespace(update_size=True, update_mode=False, update_uid=False, update_gid=False)


async def test_directories_made_locally(devserver, recorder, tmp_path):
    run_id = add_run(devserver, "w")
    async with open_writable_ops(devserver, tmp_path / "spool") as ops:
        inputs = await walk(ops, "runs", "w", "input")
        made = await ops.mkdir(inputs.st_ino, b"a", 0o755, WCTX)
        inner = await ops.mkdir(made.st_ino, b"b", 0o755, WCTX)
        assert stat.S_IMODE(inner.st_mode) == 0o755
        assert list(await listdir(ops, inputs.st_ino, recorder)) == ["a"]
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.rmdir(inputs.st_ino, b"a", WCTX)
        assert fuse_errno(excinfo) == errno.ENOTEMPTY
        await ops.rename(made.st_ino, b"b", made.st_ino, b"c", 0, WCTX)
        assert list(await listdir(ops, made.st_ino, recorder)) == ["c"]
        renamed = await ops.lookup(made.st_ino, b"c", WCTX)
        assert renamed.st_ino == inner.st_ino
        again = await ops.mkdir(made.st_ino, b"b", 0o755, WCTX)  # the old name, a new directory
        assert again.st_ino != inner.st_ino
        await write_file(ops, renamed.st_ino, "in-c.txt", b"c")
        assert list(await listdir(ops, again.st_ino, recorder)) == []
        assert list(await listdir(ops, renamed.st_ino, recorder)) == ["in-c.txt"]
        await ops.rmdir(made.st_ino, b"b", WCTX)
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.rmdir(made.st_ino, b"c", WCTX)
        assert fuse_errno(excinfo) == errno.ENOTEMPTY
        assert input_names(devserver, run_id) == {"a/c/in-c.txt": hashlib.sha256(b"c").hexdigest()}


async def test_an_empty_made_directory_can_be_removed(devserver, recorder, tmp_path):
    add_run(devserver, "w")
    async with open_writable_ops(devserver, tmp_path / "spool") as ops:
        inputs = await walk(ops, "runs", "w", "input")
        made = await ops.mkdir(inputs.st_ino, b"a", 0o755, WCTX)
        await ops.mkdir(made.st_ino, b"c", 0o755, WCTX)
        await ops.rmdir(made.st_ino, b"c", WCTX)
        await ops.rmdir(inputs.st_ino, b"a", WCTX)
        assert await listdir(ops, inputs.st_ino, recorder) == {}
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.rmdir(inputs.st_ino, b"a", WCTX)
        assert fuse_errno(excinfo) == errno.ENOENT


async def test_rsync_style_rename_leaves_only_the_final_name(devserver, recorder, tmp_path):
    run_id = add_run(devserver, "w")
    async with open_writable_ops(devserver, tmp_path / "spool") as ops:
        inputs = await walk(ops, "runs", "w", "input")
        sub = await ops.mkdir(inputs.st_ino, b"sub", 0o755, WCTX)
        temp = await write_file(ops, sub.st_ino, ".data.csv.Ab12Cd", b"1,2\n")
        assert list(input_names(devserver, run_id)) == ["sub/.data.csv.Ab12Cd"]
        await ops.rename(sub.st_ino, b".data.csv.Ab12Cd", sub.st_ino, b"data.csv", 0, WCTX)
        assert input_names(devserver, run_id) == {
            "sub/data.csv": hashlib.sha256(b"1,2\n").hexdigest()
        }
        listed = await listdir(ops, sub.st_ino, recorder)
        assert list(listed) == ["data.csv"]
        assert listed["data.csv"].st_ino == temp.st_ino
        # A staged file (not closed yet) is renamed locally; it lands under its new name.
        info, attr = await ops.create(sub.st_ino, b".x.tmp", 0o644, os.O_WRONLY, WCTX)
        await ops.write(info.fh, 0, b"x")
        await ops.rename(sub.st_ino, b".x.tmp", inputs.st_ino, b"x.txt", 0, WCTX)
        await ops.flush(info.fh)
        await ops.release(info.fh)
        assert sorted(input_names(devserver, run_id)) == ["sub/data.csv", "x.txt"]


async def test_unlink_before_close_uploads_nothing(devserver, recorder, tmp_path):
    run_id = add_run(devserver, "w")
    async with open_writable_ops(devserver, tmp_path / "spool") as ops:
        inputs = await walk(ops, "runs", "w", "input")
        info, _ = await ops.create(inputs.st_ino, b"gone.txt", 0o644, os.O_WRONLY, WCTX)
        await ops.write(info.fh, 0, b"never uploaded")
        await ops.unlink(inputs.st_ino, b"gone.txt", WCTX)
        assert await listdir(ops, inputs.st_ino, recorder) == {}
        await ops.write(info.fh, 14, b"!")
        await ops.flush(info.fh)
        await ops.release(info.fh)
    assert input_names(devserver, run_id) == {}


async def test_a_landed_file_stays_shown_until_a_listing_asked_after_its_landing(
    devserver, tmp_path, monkeypatch
):
    """Read-your-writes across a landing, and no phantom after it (``overlay.py``): a
    listing asked before the file landed (so without it) and laid out after the landing
    still shows the file; a listing asked after the landing is the server's word: once
    another client attached the artifact in another category, ``input/`` no longer has it.
    The order is driven: the first listing is held, answered, until the file has landed."""
    run_id = add_run(devserver, "w")
    answered, resume = trio.Event(), trio.Event()
    hold_next = False
    list_artifacts = SimvueClient.list_artifacts

    async def held_once(self, *args, **kwargs):
        nonlocal hold_next
        artifacts = await list_artifacts(self, *args, **kwargs)
        if hold_next:
            hold_next = False
            answered.set()
            await resume.wait()
        return artifacts

    monkeypatch.setattr(SimvueClient, "list_artifacts", held_once)
    async with open_writable_ops(devserver, tmp_path / "spool", metadata_ttl=0) as ops:
        inputs = await walk(ops, "runs", "w", "input")
        info, attr = await ops.create(inputs.st_ino, b"new.txt", 0o644, os.O_WRONLY, WCTX)
        await ops.write(info.fh, 0, b"hello")
        found = []

        async def look_up() -> None:
            found.append(await ops.lookup(inputs.st_ino, b"new.txt", WCTX))

        async with trio.open_nursery() as nursery:
            hold_next = True
            nursery.start_soon(look_up)
            await answered.wait()  # the server answered the lookup's listing: no new.txt
            await ops.flush(info.fh)  # lands
            await ops.release(info.fh)
            resume.set()
        assert [entry.st_ino for entry in found] == [attr.st_ino]
        (record,) = devserver.run_artifacts(run_id, category="input")
        attach_artifact(devserver, run_id, record["id"], "output")
        assert (await ops.lookup(inputs.st_ino, b"new.txt", WCTX)).st_ino == 0  # no such name
        output = await walk(ops, "runs", "w", "output")
        moved = await ops.lookup(output.st_ino, b"new.txt", WCTX)
        assert await ops.getxattr(moved.st_ino, b"user.simvue.id", WCTX) == record["id"].encode()


async def test_release_commits_what_no_flush_could(devserver, tmp_path):
    run_id = add_run(devserver, "w")
    async with open_writable_ops(devserver, tmp_path / "spool") as ops:
        inputs = await walk(ops, "runs", "w", "input")
        info, _ = await ops.create(inputs.st_ino, b"late.txt", 0o644, os.O_WRONLY, WCTX)
        await ops.write(info.fh, 0, b"late")
        await ops.release(info.fh)
    assert input_names(devserver, run_id) == {"late.txt": hashlib.sha256(b"late").hexdigest()}


async def test_a_failed_upload_is_reported_by_flush_and_shown_as_pending(devserver, tmp_path):
    run_id = add_run(devserver, "w")
    async with open_writable_ops(devserver, tmp_path / "spool", upload_retry_initial=0.1) as ops:
        inputs = await walk(ops, "runs", "w", "input")
        info, attr = await ops.create(inputs.st_ino, b"p.bin", 0o644, os.O_WRONLY, WCTX)
        await ops.write(info.fh, 0, b"pending")
        devserver.set_faults(storage_error_status=500, storage_error_rate=1.0)
        try:
            with pytest.raises(pyfuse3.FUSEError) as excinfo:
                await ops.flush(info.fh)
            assert fuse_errno(excinfo) == errno.EIO
            await ops.release(info.fh)
            pending = await ops.getattr(attr.st_ino, WCTX)
            assert stat.S_IMODE(pending.st_mode) == 0o444
            assert pending.attr_timeout == 0
            assert await ops.getxattr(attr.st_ino, b"user.simvue.state", WCTX) == b"pending"
            text = (await ops.getxattr(attr.st_ino, b"user.simvue.pending", WCTX)).decode()
            assert "failed attempt" in text
            assert "500" in text
            assert await read_all(ops, attr.st_ino) == b"pending"
            with pytest.raises(pyfuse3.FUSEError) as excinfo:
                await ops.open(attr.st_ino, os.O_WRONLY, WCTX)
            assert fuse_errno(excinfo) == errno.EACCES
        finally:
            devserver.clear_faults()
        for _ in range(100):  # the background retry lands it
            if b"user.simvue.id" in await ops.listxattr(attr.st_ino, WCTX):
                break
            await trio.sleep(0.1)
        assert "p.bin" in input_names(devserver, run_id)
        landed = await ops.getattr(attr.st_ino, WCTX)
        assert 0 < landed.attr_timeout <= LANDED_RETENTION  # landed: no longer attr_timeout 0


def test_holds_for_writing_reads_the_descriptor_table(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    inode = path.stat().st_ino
    with open(path, "rb") as reader:
        assert not holds_for_writing(os.getpid(), None, inode)
        with open(f"/proc/self/fdinfo/{reader.fileno()}") as info:
            mount_id = int(dict(line.split(":", 1) for line in info)["mnt_id"])
    with open(path, "r+b"):
        assert holds_for_writing(os.getpid(), None, inode)
        assert holds_for_writing(os.getpid(), mount_id, inode)
        assert not holds_for_writing(os.getpid(), mount_id + 100000, inode)
    assert not holds_for_writing(os.getpid(), None, inode)
    assert not holds_for_writing(2**22 + 12345, None, inode)  # no such process
    assert process_of(threading.get_native_id()) == os.getpid()
    assert process_of(0) == 0


def staged_file(name, checksum="", state=FileState.STAGED, artifact=None):
    f = StagedFile("0" * 32, "run", "input", name, Path("/nonexistent"), 0.0)
    f.checksum = checksum
    f.state = state
    f.artifact = artifact
    return f


NAME_PARTS = st.sampled_from(["a", "b", "c.txt", "d"])
NAMES = st.lists(NAME_PARTS, min_size=1, max_size=3).map("/".join)


@given(
    server_names=st.lists(st.tuples(NAMES, st.booleans()), max_size=6),
    local_names=st.lists(st.tuples(NAMES, st.booleans()), max_size=4),
    dirs=st.lists(NAMES, max_size=3),
    hide=st.booleans(),
)
def test_merge_entry_agrees_with_merge_entries(server_names, local_names, dirs, hide):
    artifacts = [
        Artifact(id=f"id{i}", name=name, checksum=f"sum{i}" if same else "other", size=1)
        for i, (name, same) in enumerate(server_names)
    ]
    listing, _ = name_artifacts(artifacts)
    local = LocalFiles()
    for i, (name, same) in enumerate(local_names):
        local.add_file(name, staged_file(name, checksum=f"sum{i}" if same else "mine"))
    for path in dirs:
        local.add_dir(path)
    if hide and artifacts:
        local.hidden.add(artifacts[0].id)
    paths = set(listing.dirs) | {""}
    paths |= {p for name in [*local.files, *local.dirs] for p in _parents(name)}
    for path in paths:
        merged = merge_entries(listing.entries(path), local, path)
        candidates = set(merged) | {"a", "b", "c.txt", "d", "zzz"}
        candidates |= {f"{n}@{a.id}" for n in ("a", "b", "c.txt", "d") for a in artifacts}
        for name in candidates:
            assert merge_entry(listing.entries(path), local, path, name) == merged.get(name), (
                path,
                name,
            )
        hidden = {a.id for a in artifacts} & local.hidden
        assert not [e for e in merged.values() if e.artifact and e.artifact.id in hidden]


def _parents(name):
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) + 1)]


def test_alias_and_rekey_move_keys_not_inodes():
    table = InodeTable()
    written = table.ensure(("written", "r", "input", "s1"), NodeKind.FILE, ROOT_INODE)
    table.alias(("artifact", "r", "input", "a1"), written.inode)
    assert table.ensure(("artifact", "r", "input", "a1"), NodeKind.FILE, ROOT_INODE) is written
    assert table.ensure(("written", "r", "input", "s1"), NodeKind.FILE, ROOT_INODE) is written
    folder = table.ensure(("dir", "r", "input", "old"), NodeKind.DIR, ROOT_INODE)
    table.rekey(folder, ("dir", "r", "input", "new"))
    assert table.ensure(("dir", "r", "input", "new"), NodeKind.DIR, ROOT_INODE) is folder
    fresh = table.ensure(("dir", "r", "input", "old"), NodeKind.DIR, ROOT_INODE)
    assert fresh.inode not in (folder.inode, written.inode)
    with pytest.raises(KeyError):
        table.alias(("artifact", "r", "input", "a2"), 10**9)


async def test_two_creators_of_one_new_name_one_gets_eexist(devserver, tmp_path):
    run_id = add_run(devserver, "w")
    async with open_writable_ops(devserver, tmp_path / "spool") as ops:
        inputs = await walk(ops, "runs", "w", "input")
        outcomes: list[object] = []

        async def create() -> None:
            try:
                info, _ = await ops.create(inputs.st_ino, b"race.txt", 0o644, os.O_WRONLY, WCTX)
            except pyfuse3.FUSEError as exc:
                outcomes.append(exc.errno)
            else:
                outcomes.append(info)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            nursery.start_soon(create)
        assert errno.EEXIST in outcomes
        [info] = [o for o in outcomes if isinstance(o, pyfuse3.FileInfo)]
        await ops.write(info.fh, 0, b"winner")
        await ops.flush(info.fh)
        await ops.release(info.fh)
    assert input_names(devserver, run_id) == {"race.txt": hashlib.sha256(b"winner").hexdigest()}

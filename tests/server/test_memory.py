"""What the daemon keeps per file written: Operations handlers awaited directly (no kernel)
against a real devserver, counting the objects still alive after the files landed.

Issue 17: RSS grew by about 14 KiB per file written, for the life of the mount. A landed
file that is settled (``Tree.settle_landed``) must leave only what any artifact shown
costs: its node (the kernel holds it) and its record in the cached listing.
"""

from __future__ import annotations

import gc
import os
import re
import tracemalloc
from collections import Counter

import trio
from helpers import new_run
from ops_util import CTX, WCTX, open_ops, open_writable_ops

import simvuefs.fuse.tree
import simvuefs.write.landing
from simvuefs.fuse.inodes import Node
from simvuefs.models import Artifact
from simvuefs.write.staged import StagedFile
from simvuefs.write.writebehind import FileWrites

WARM_UP = 10
FILES = 40
TTL = 0.2
TRACKED = (StagedFile, FileWrites, trio.Lock, Node, Artifact)


def alive() -> Counter[str]:
    """How many objects of each TRACKED type are alive now."""
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, TRACKED))


async def write_files(ops, inputs: int, names: list[str]) -> list[int]:
    """Write each name as the kernel does for ``echo > name``: a lookup that finds none, then
    create, write, flush and release. Return the inodes."""
    inodes = []
    for name in names:
        missing = await ops.lookup(inputs, os.fsencode(name), CTX)
        assert missing.st_ino == 0  # a negative entry
        info, attr = await ops.create(inputs, os.fsencode(name), 0o644, os.O_WRONLY, WCTX)
        await ops.write(info.fh, 0, name.encode() * 100)
        await ops.flush(info.fh)
        await ops.release(info.fh)
        inodes.append(attr.st_ino)
    return inodes


async def walk(ops, *names: str) -> int:
    """The inode of the path *names* from the mount's root, looked up one name at a time."""
    inode = 1
    for name in names:
        inode = (await ops.lookup(inode, os.fsencode(name), CTX)).st_ino
    return inode


async def test_landed_files_keep_only_their_node_and_listing_record(
    devserver, tmp_path, monkeypatch
):
    # Settle at once (the rename window of a landed file is LANDED_RETENTION seconds); a
    # listing fetched after the writes (metadata TTL 0.2 s) shows every landed file.
    monkeypatch.setattr(simvuefs.fuse.tree, "LANDED_RETENTION", 0.0)
    monkeypatch.setattr(simvuefs.write.landing, "LANDED_RETENTION", 0.0)
    new_run(devserver, "mem")
    async with open_writable_ops(devserver, tmp_path / "spool", metadata_ttl=TTL) as ops:
        inputs = await walk(ops, "runs", "mem", "input")
        await write_files(ops, inputs, [f"warm-{i}.dat" for i in range(WARM_UP)])
        await trio.sleep(TTL + 0.05)
        await ops.lookup(inputs, b"warm-0.dat", CTX)  # a fresh listing: they settle
        before = alive()
        names = [f"file-{i}.dat" for i in range(FILES)]
        inodes = await write_files(ops, inputs, names)
        await trio.sleep(TTL + 0.05)
        await ops.lookup(inputs, b"file-0.dat", CTX)
        after = alive()

        growth = {kind: after[kind] - before[kind] for kind in after | before}
        # The write path keeps nothing of a landed file ...
        assert growth.get("StagedFile", 0) == 0, growth
        assert growth.get("FileWrites", 0) == 0, growth
        assert growth.get("Lock", 0) == 0, growth
        # ... the tree one node per file (the kernel holds it), sharing the artifact record
        # of the cached listing: one record per file, not one per landing and listing
        # (the listing is cached: the last lookup fetched it).
        assert growth.get("Node", 0) == FILES, growth
        assert growth.get("Artifact", 0) == FILES, growth
        # The node's key holds the record's id, not a copy of it from the upload's answer.
        nodes = {o.inode: o for o in gc.get_objects() if isinstance(o, Node)}
        for inode in inodes:
            artifact = nodes[inode].artifact
            assert artifact is not None
            assert nodes[inode].key[-1] is artifact.id

        # A settled file is an artifact like any other: same inode, attributes, content.
        for name, inode in zip(names[:3], inodes[:3], strict=True):
            attr = await ops.lookup(inputs, os.fsencode(name), CTX)
            assert attr.st_ino == inode
            assert (await ops.getattr(inode, CTX)).st_size == len(name) * 100
            info = await ops.open(inode, os.O_RDONLY, CTX)
            assert await ops.read(info.fh, 0, 1 << 20) == name.encode() * 100
            await ops.release(info.fh)
            assert await ops.getxattr(inode, b"user.simvue.checksum", CTX)


async def test_a_settled_file_s_node_goes_once_the_kernel_forgets_it(
    devserver, tmp_path, monkeypatch
):
    # Issue 17: the kernel keeps the entry of every file created until it runs short of
    # memory, so each settled file kept its node (136 B) for the life of the mount. Once
    # settled, the kernel is asked to drop the entry; the node goes when it forgets the
    # inode, and a later lookup makes it again with the same inode number.
    monkeypatch.setattr(simvuefs.fuse.tree, "LANDED_RETENTION", 0.0)
    monkeypatch.setattr(simvuefs.write.landing, "LANDED_RETENTION", 0.0)
    new_run(devserver, "forgotten")
    asked: list[tuple[int, str]] = []
    spool = tmp_path / "spool"
    async with open_writable_ops(
        devserver, spool, lambda parent, name: asked.append((parent, name)), metadata_ttl=TTL
    ) as ops:
        inputs = await walk(ops, "runs", "forgotten", "input")
        await write_files(ops, inputs, [f"warm-{i}.dat" for i in range(WARM_UP)])
        await trio.sleep(TTL + 0.05)
        await ops.lookup(inputs, b"warm-0.dat", CTX)  # a fresh listing: they settle
        before = alive()
        names = [f"file-{i}.dat" for i in range(FILES)]
        asked.clear()
        inodes = await write_files(ops, inputs, names)
        await trio.sleep(TTL + 0.05)
        await ops.lookup(inputs, b"warm-0.dat", CTX)  # listed again: all have settled
        assert sorted(asked) == sorted((inputs, name) for name in names)
        # The kernel still holds them (the create's lookup): nodes kept until it forgets.
        assert alive()["Node"] - before["Node"] == FILES
        await ops.forget([(inode, 1) for inode in inodes])
        after = alive()
        assert after["Node"] == before["Node"]
        assert after["Artifact"] - before["Artifact"] == FILES
        # Looked up again: a node with the same inode, showing the file.
        for name, inode in zip(names[:3], inodes[:3], strict=True):
            attr = await ops.lookup(inputs, os.fsencode(name), CTX)
            assert attr.st_ino == inode
            assert (await ops.getattr(inode, CTX)).st_size == len(name) * 100
            info = await ops.open(inode, os.O_RDONLY, CTX)
            assert await ops.read(info.fh, 0, 1 << 20) == name.encode() * 100
            await ops.release(info.fh)
        assert alive()["Node"] - before["Node"] == 3
        # A file written since is not released before it settles.
        [late] = await write_files(ops, inputs, ["late.dat"])
        assert ops.table.get(late) is not None


async def test_removed_files_are_dropped_once_the_kernel_forgets_them(
    devserver, tmp_path, monkeypatch
):
    # SQLite's default journal: a file per transaction, created, written and removed, some
    # before they land (removed while still open, or closed but not uploaded yet), some after.
    # The write path keeps a landed file for its rename window (LANDED_RETENTION): none here.
    monkeypatch.setattr(simvuefs.write.landing, "LANDED_RETENTION", 0.0)
    new_run(devserver, "journal")
    async with open_writable_ops(devserver, tmp_path / "spool", metadata_ttl=TTL) as ops:
        inputs = await walk(ops, "runs", "journal", "input")
        await write_files(ops, inputs, ["warm.dat"])
        await ops.unlink(inputs, b"warm.dat", CTX)
        before = alive()
        forgotten = []
        for i in range(FILES):
            name = os.fsencode(f"db-journal-{i}")
            info, attr = await ops.create(inputs, name, 0o644, os.O_WRONLY, WCTX)
            await ops.write(info.fh, 0, b"page" * 256)
            if i % 2:  # removed while open: discarded before it lands
                await ops.unlink(inputs, name, CTX)
                await ops.release(info.fh)
            else:  # closed (it lands), then removed
                await ops.flush(info.fh)
                await ops.release(info.fh)
                await ops.unlink(inputs, name, CTX)
            # Still shown to the kernel, which holds it (the create's lookup) ...
            assert (await ops.getattr(attr.st_ino, CTX)).st_ino == attr.st_ino
            forgotten.append((attr.st_ino, 1))
        assert alive()["Node"] - before["Node"] == FILES
        # ... until it forgets it: then nothing of the file is left.
        await ops.forget(forgotten)
        # (a listing fetched while a file was on the server holds its record for a TTL)
        await trio.sleep(TTL + 0.05)
        for i in (0, 1):
            missing = await ops.lookup(inputs, os.fsencode(f"db-journal-{i}"), CTX)
            assert missing.st_ino == 0
        after = alive()
        growth = {kind: after[kind] - before[kind] for kind in after | before}
        assert all(count <= 0 for count in growth.values()), growth


LISTED = 2000
PER_ARTIFACT_BUDGET = 1152
"""Bytes: 1,093 per artifact measured with 10,000 (1,112 with 2,000), 1,157 before the
empty metadata was shared (docs/reliability.md has the breakdown)."""


async def test_a_listed_artifact_costs_about_a_kibibyte(devserver):
    # Issue 17: a directory listing 10,000 artifacts cost ~27 MiB. What stays once the
    # listing is cached and every entry has its node: records, names, entries and nodes.
    devserver.set_faults(extra_artifacts=LISTED)
    new_run(devserver, "listed")
    async with open_ops(devserver, metadata_ttl=3600) as ops:
        run = await walk(ops, "runs", "listed")
        before_nodes = alive()["Node"]
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            output = (await ops.lookup(run, b"output", CTX)).st_ino
            await ops.releasedir(await ops.opendir(output, CTX))
            first = await ops.lookup(output, b"synthetic-000000.dat", CTX)
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert alive()["Node"] - before_nodes == LISTED + 1  # the directory's and its files'
        assert first.st_ino != 0
        assert retained / LISTED < PER_ARTIFACT_BUDGET, f"{retained / LISTED:.0f} B per artifact"


RELIST_TTL = 1.0
"""Seconds: long enough for two lookups in a row to share a listing on a busy machine."""


async def test_freed_memory_goes_back_once_per_long_listing_replaced(devserver, monkeypatch):
    # A listing of 10,000 artifacts parsed again at each metadata TTL leaves its freed
    # records in glibc's heap; each long one that replaces the one before gives them back
    # (fuse/heap.py), shorter ones are not worth it.
    releases: list[int] = []
    monkeypatch.setattr(simvuefs.fuse.tree, "RELEASE_AFTER", 100)
    monkeypatch.setattr(simvuefs.fuse.tree, "release_freed", lambda: releases.append(1))
    devserver.set_faults(extra_artifacts=150)
    new_run(devserver, "relisted")
    async with open_ops(devserver, metadata_ttl=RELIST_TTL) as ops:
        run = await walk(ops, "runs", "relisted")
        output = (await ops.lookup(run, b"output", CTX)).st_ino

        async def listed(name: str) -> int:
            await ops.lookup(output, os.fsencode(name), CTX)
            return len(releases)

        assert await listed("synthetic-000000.dat") == 1  # listed: 150 artifacts
        assert await listed("synthetic-000001.dat") == 1  # cached: nothing replaced
        await trio.sleep(RELIST_TTL + 0.05)
        assert await listed("synthetic-000002.dat") == 2  # listed again
        devserver.set_faults(extra_artifacts=20)
        await trio.sleep(RELIST_TTL + 0.05)
        assert await listed("synthetic-000003.dat") == 2  # 20 artifacts: not worth it


def compiled_patterns() -> int:
    """How many compiled regular expressions are alive (``re``'s cache keeps 512)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, re.Pattern))


async def test_writing_a_file_compiles_no_pattern(devserver, tmp_path, monkeypatch):
    # The spool dropped a file's checkpoint copies with pending_dir.glob(f"{id}.ckpt*"): a
    # new pattern per file, which re's cache kept (512 of them) and pathlib's selectors
    # (128): about 1.2 KiB per file written, up to about 0.6 MiB.
    monkeypatch.setattr(simvuefs.write.landing, "LANDED_RETENTION", 0.0)
    new_run(devserver, "patterns")
    async with open_writable_ops(devserver, tmp_path / "spool", metadata_ttl=TTL) as ops:
        inputs = await walk(ops, "runs", "patterns", "input")
        await write_files(ops, inputs, [f"warm-{i}.dat" for i in range(WARM_UP)])
        before = compiled_patterns()
        await write_files(ops, inputs, [f"file-{i}.dat" for i in range(FILES)])
        assert compiled_patterns() - before == 0


RELISTED = 2000


async def test_a_directory_listed_again_keeps_the_records_of_unchanged_artifacts(devserver):
    # Issue 17: a directory is listed again at each metadata TTL, and each listing made a new
    # record per artifact, beside the old one while it was decoded, then in its place, so a
    # directory of 10,000 artifacts in use re-made 10,000 long-lived records a second,
    # scattered among the nodes made meanwhile (freed blocks the heap cannot give back).
    devserver.set_faults(extra_artifacts=RELISTED)
    new_run(devserver, "again")
    async with open_ops(devserver, metadata_ttl=TTL) as ops:
        run = await walk(ops, "runs", "again")
        output = (await ops.lookup(run, b"output", CTX)).st_ino
        await ops.releasedir(await ops.opendir(output, CTX))
        first = [o for o in gc.get_objects() if isinstance(o, Artifact)]
        assert len(first) >= RELISTED
        devserver.set_faults(extra_artifacts=RELISTED + 1)  # one more: a new record
        await trio.sleep(TTL + 0.05)
        added = await ops.lookup(output, b"synthetic-%06d.dat" % RELISTED, CTX)  # listed again
        assert added.st_ino != 0  # (so the second listing came from the server)
        # The records of the first listing (the list above keeps them) and one new: not a
        # second record per artifact.
        assert alive()["Artifact"] == len(first) + 1


LANDED = 100
PER_LANDED_FILE_BUDGET = 1600
"""Bytes: what a landed, settled file keeps once its directory was listed again (100 files
of 1.5 KiB written one after another): 1,272 measured alone (1,017 over 300 files), and
about 300 more in a CI worker after other tests (the dictionaries grow in steps that depend
on what they held). Its record: the ``Artifact`` 136, id and name 147, the URL's signed
rest 137, checksum 65, ``created`` 32; its node 136 and key 72; the dictionaries. Before
the record was kept compactly (session 7): 1,469 alone, 1,781 in a CI worker, with the
record's strings 580, ``created`` 48, an ``Entry`` 59 and a node of 152."""
LIBRARY_CACHES = tuple(
    tracemalloc.Filter(False, pattern, all_frames=True)
    for pattern in ("*/urllib/*", "*/httpx/*", "*/httpcore/*", "*/h11/*", tracemalloc.__file__)
)
"""What the libraries keep, bounded, of the requests made (urllib's URL-split cache: 128)."""


def kept_by_simvuefs(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    """Bytes alive in *after* but not in *before*, but for the libraries' caches."""
    after, before = after.filter_traces(LIBRARY_CACHES), before.filter_traces(LIBRARY_CACHES)
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


async def test_a_landed_file_keeps_about_a_kibibyte(devserver, tmp_path, monkeypatch):
    # Issue 17: what a file written, landed and settled keeps for the life of the mount:
    # its listing record (kept once, however often the directory is listed again; its key
    # holds the record's id) and its node.
    monkeypatch.setattr(simvuefs.fuse.tree, "LANDED_RETENTION", 0.0)
    monkeypatch.setattr(simvuefs.write.landing, "LANDED_RETENTION", 0.0)
    new_run(devserver, "kept")
    async with open_writable_ops(devserver, tmp_path / "spool", metadata_ttl=TTL) as ops:
        inputs = await walk(ops, "runs", "kept", "input")
        await write_files(ops, inputs, [f"warm-{i}.dat" for i in range(WARM_UP)])
        await trio.sleep(TTL + 0.05)
        await ops.lookup(inputs, b"warm-0.dat", CTX)
        tracemalloc.start(8)  # the innermost frames say which library allocated
        try:
            gc.collect()
            before = tracemalloc.take_snapshot()
            await write_files(ops, inputs, [f"file-{i:04d}.dat" for i in range(LANDED)])
            for _ in range(2):  # settled at the first listing, the same at the next
                await trio.sleep(TTL + 0.05)
                await ops.lookup(inputs, b"file-0000.dat", CTX)
            gc.collect()
            kept = kept_by_simvuefs(before, tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
        assert kept / LANDED < PER_LANDED_FILE_BUDGET, f"{kept / LANDED:.0f} B per file"


RELISTING_PEAK_BUDGET = 400
"""Bytes per artifact that a listing of RELISTED unchanged artifacts allocates beside what
stays (tracemalloc's peak above the level before it): 258 measured (228 with 10,000), 1,100
when the body was read whole (1,089 with 10,000: the answer, about 530 B per artifact, came
in one or a few socket reads, and its decoded text was made beside it)."""


async def test_a_listing_is_decoded_as_it_arrives(devserver):
    # Issue 17: the re-listings of a large directory made the resident size's peaks: the
    # body's chunks, their join and its decoded text (each about 0.5 KiB per artifact) were
    # alive at once, beside the records. Decoded as it arrives, a listing of unchanged
    # artifacts holds a chunk and the record being made.
    devserver.set_faults(extra_artifacts=RELISTED)
    new_run(devserver, "peak")
    async with open_ops(devserver, metadata_ttl=TTL) as ops:
        run = await walk(ops, "runs", "peak")
        output = (await ops.lookup(run, b"output", CTX)).st_ino
        await ops.releasedir(await ops.opendir(output, CTX))
        await trio.sleep(TTL + 0.05)
        tracemalloc.start()
        try:
            gc.collect()
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            await ops.lookup(output, b"synthetic-000001.dat", CTX)  # listed again
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert peak / RELISTED < RELISTING_PEAK_BUDGET, f"{peak / RELISTED:.0f} B per artifact"

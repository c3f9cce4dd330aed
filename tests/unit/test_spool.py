"""Tests of simvuefs.write.spool: the spool directory, its journal and its recovery.

Files only (a spool in a temporary directory); the Uploader that uses it is tested in
tests/server/test_upload.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import sha256

from simvuefs.errors import ConfigError, LocalError
from simvuefs.write.spool import (
    JournalRecord,
    Spool,
    new_spool_id,
    read_pending,
    write_at,
)


def _record(spool_id: str = "a" * 32, **changes: Any) -> JournalRecord:
    fields: dict[str, Any] = {
        "id": spool_id,
        "run_id": "run-1",
        "category": "input",
        "name": "system/mesh.dat",
        "checksum": sha256(b"content"),
        "size": 7,
        "created": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    }
    return JournalRecord(**{**fields, **changes})


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool.open(tmp_path / "spool", min_free=0)
    yield opened
    opened.close()


def _staged(spool: Spool, content: bytes) -> str:
    """Write *content* to a new staging file; return its spool id."""
    spool_id = new_spool_id()
    fd = spool.create(spool_id)
    try:
        write_at(fd, 0, content)
    finally:
        os.close(fd)
    return spool_id


# -- the journal record ----------------------------------------------------------------------


def test_record_round_trip_and_atomic_save(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "spool", min_free=0)
    try:
        record = _record(
            attempts=2, last_error="boom", artifact_id="x", stage="marked", replaces=("old",)
        )
        assert JournalRecord.from_bytes(record.to_bytes(), record.id) == record
        spool.save(record)
        assert read_pending(spool.root) == [record]
        assert not list(spool.pending_dir.glob("*.tmp"))
        assert oct(spool.root.stat().st_mode & 0o777) == "0o700"
        for sub in ("staging", "pending", "landed", "abandoned"):
            assert oct((spool.root / sub).stat().st_mode & 0o777) == "0o700"
    finally:
        spool.close()


@pytest.mark.parametrize(
    "corrupt",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"version": 99}',
        lambda d: {**d, "id": "b" * 32},
        lambda d: {**d, "name": "../../etc/passwd"},
        lambda d: {**d, "checksum": "xyz"},
        lambda d: {**d, "size": -1},
        lambda d: {**d, "size": True},
        lambda d: {**d, "run_id": ""},
        lambda d: {**d, "category": "secret"},
        lambda d: {**d, "replaces": [3]},
        lambda d: {**d, "created": "yesterday"},
        lambda d: {k: v for k, v in d.items() if k != "stage"},
        lambda d: {**d, "stage": "attached"},  # attached without an artifact id
        lambda d: {**d, "stage": "flying"},
        lambda d: {**d, "stage": "stored", "artifact_id": 5},
        lambda d: {**d, "failed": "ENOTANERRNO"},
        lambda d: {**d, "failed": 13},
    ],
)
def test_corrupt_records_are_rejected(corrupt: bytes | Callable[[dict[str, Any]], Any]) -> None:
    good = _record()
    raw = (
        corrupt if isinstance(corrupt, bytes) else json.dumps(corrupt(json.loads(good.to_bytes())))
    )
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        JournalRecord.from_bytes(raw if isinstance(raw, bytes) else raw.encode(), good.id)


def test_a_final_refusal_is_kept_in_the_record_and_cleared_for_a_retry() -> None:
    refused = _record(artifact_id="x", stage="marked", attempts=1, failed="EACCES")
    assert JournalRecord.from_bytes(refused.to_bytes(), refused.id) == refused
    assert refused.failed_errno == errno.EACCES
    retried = refused.retried()
    assert (retried.failed, retried.stage, retried.artifact_id) == ("", "new", None)
    assert (retried.attempts, retried.failed_errno) == (1, 0)
    attached = _record(artifact_id="x", stage="attached", failed="ENOENT").retried()
    assert (attached.failed, attached.stage, attached.artifact_id) == ("", "attached", "x")
    # records written before the field existed are read as not failed
    older = json.loads(_record().to_bytes())
    del older["failed"]
    assert JournalRecord.from_bytes(json.dumps(older).encode(), "a" * 32).failed == ""


def test_landing_twice_and_dropping_a_half_committed_file(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "spool", min_free=0)
    try:
        record = _record(new_spool_id())
        fd = spool.create(record.id)
        write_at(fd, 0, b"content")
        os.close(fd)
        spool.commit(record)
        assert spool.data_path(record.id).read_bytes() == b"content"
        spool.land(record.id)
        spool.land(record.id)  # a retry after a half-done retirement
        assert spool.landed_path(record.id).read_bytes() == b"content"
        assert not spool.record_path(record.id).exists()

        half = _record(new_spool_id())
        os.close(spool.create(half.id))
        spool.save(half)  # a commit that failed after writing its record
        spool.drop_staged(half.id)
        assert not spool.record_path(half.id).exists()
        assert not spool.staging_path(half.id).exists()
    finally:
        spool.close()


def test_spool_is_locked_to_one_process(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "spool", min_free=0)
    try:
        with pytest.raises(ConfigError, match="in use by another simvuefs process"):
            Spool.open(tmp_path / "spool", min_free=0)
    finally:
        spool.close()
    Spool.open(tmp_path / "spool", min_free=0).close()  # free again
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot use spool directory"):
        Spool.open(tmp_path / "file" / "spool", min_free=0)


def test_recovery_keeps_everything_it_cannot_upload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "spool"
    Spool.open(root, min_free=0).close()
    good, interrupted, corrupt, short, orphan, staged, landed = (f"{i:032x}" for i in range(1, 8))
    (root / "pending" / f"{good}.data").write_bytes(b"content")
    (root / "pending" / f"{good}.json").write_bytes(_record(good).to_bytes())
    # a crash between writing the record and moving the data out of staging/
    (root / "staging" / interrupted).write_bytes(b"content")
    (root / "pending" / f"{interrupted}.json").write_bytes(_record(interrupted).to_bytes())
    (root / "pending" / f"{corrupt}.data").write_bytes(b"precious")
    (root / "pending" / f"{corrupt}.json").write_bytes(b'{"version": 1, "id": tru')
    (root / "pending" / f"{short}.data").write_bytes(b"cont")
    (root / "pending" / f"{short}.json").write_bytes(_record(short).to_bytes())
    (root / "pending" / f"{orphan}.data").write_bytes(b"no record")
    (root / "staging" / staged).write_bytes(b"never closed")
    (root / "landed" / landed).write_bytes(b"landed")
    (root / "pending" / f"{landed}.json").write_bytes(_record(landed).to_bytes())
    (root / "pending" / f"{good}.json.tmp").write_bytes(b"half a rec")

    spool = Spool.open(root, min_free=0)
    try:
        with caplog.at_level(logging.WARNING, logger="simvuefs.write.spool"):
            records = spool.recover()
    finally:
        spool.close()
    assert sorted(r.id for r in records) == sorted([good, interrupted])
    assert (root / "pending" / f"{interrupted}.data").read_bytes() == b"content"
    # unreadable or inconsistent records are kept with their data, never deleted
    assert (root / "pending" / f"{corrupt}.data").read_bytes() == b"precious"
    assert (root / "pending" / f"{corrupt}.json").exists()
    assert (root / "pending" / f"{short}.data").exists()
    assert (root / "abandoned" / f"{orphan}.data").read_bytes() == b"no record"
    assert (root / "abandoned" / staged).read_bytes() == b"never closed"
    assert not list((root / "landed").iterdir())
    assert not (root / "pending" / f"{landed}.json").exists()
    assert not list((root / "pending").glob("*.tmp"))
    text = caplog.text
    assert corrupt in text
    assert short in text
    assert orphan in text
    assert staged in text


# -- staging and sealing ----------------------------------------------------------------------


def test_seal_completes_a_running_hash_and_fails_on_a_short_file(spool: Spool) -> None:
    content = os.urandom(3 * 1024 * 1024 + 5)  # several HASH_CHUNKs
    spool_id = _staged(spool, content)
    assert spool.seal(spool_id, hashlib.sha256(content[:1000]), 1000, len(content)) == sha256(
        content
    )
    assert spool.seal(spool_id, hashlib.sha256(), 0, len(content)) == sha256(content)
    with pytest.raises(LocalError, match="shorter than") as info:
        spool.seal(spool_id, hashlib.sha256(), 0, len(content) + 1)
    assert info.value.errno == errno.EIO


def test_the_free_space_reserve_refuses_growth_with_enospc(spool: Spool) -> None:
    assert spool.check_free(0) > 0
    fd = spool.create(new_spool_id())
    try:
        spool.truncate(fd, 100, 100)
        spool.min_free = 1 << 60  # more than any disk has
        for refused in (
            lambda: spool.check_free(0),
            lambda: spool.create(new_spool_id()),
            lambda: spool.truncate(fd, 200, 100),
        ):
            with pytest.raises(LocalError, match="kept in reserve") as info:
                refused()
            assert info.value.errno == errno.ENOSPC
        spool.truncate(fd, 10, 0)  # shrinking needs no room
        assert os.fstat(fd).st_size == 10
    finally:
        os.close(fd)
    assert len(list(spool.staging_dir.iterdir())) == 1


# -- the journal ------------------------------------------------------------------------------


def test_a_committed_upload_is_recovered_after_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = Spool.open(root, min_free=0)
    try:
        spool_id = _staged(spool, b"content")
        spool.commit(_record(spool_id))
        assert not spool.staging_path(spool_id).exists()
        assert spool.data_path(spool_id).read_bytes() == b"content"
        progressed = _record(spool_id, artifact_id="x", stage="stored", attempts=1)
        spool.save(progressed)
    finally:
        spool.close()
    spool = Spool.open(root, min_free=0)
    try:
        assert spool.recover() == [progressed]
        assert spool.data_path(spool_id).read_bytes() == b"content"
    finally:
        spool.close()


def test_landed_content_can_be_journaled_again_while_it_is_kept(spool: Spool) -> None:
    spool_id = _staged(spool, b"content")
    spool.commit(_record(spool_id))
    spool.land(spool_id)
    assert read_pending(spool.root) == []
    renamed = _record(spool_id, name="renamed.dat", replaces=("old-artifact",))
    spool.relaunch(renamed)
    assert not spool.landed_path(spool_id).exists()
    assert spool.data_path(spool_id).read_bytes() == b"content"
    assert read_pending(spool.root) == [renamed]

    spool.land(spool_id)
    spool.drop_landed(spool_id)
    with pytest.raises(LocalError, match="no longer kept locally") as info:
        spool.relaunch(renamed)
    assert info.value.errno == errno.EXDEV
    assert read_pending(spool.root) == []


def test_a_crash_inside_a_relaunch_abandons_the_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "spool"
    spool = Spool.open(root, min_free=0)
    try:
        spool_id = _staged(spool, b"content")
        spool.commit(_record(spool_id))
        spool.land(spool_id)
        # relaunch moves the content back first, then writes the record: crash in between
        os.rename(spool.landed_path(spool_id), spool.data_path(spool_id))
    finally:
        spool.close()
    spool = Spool.open(root, min_free=0)
    try:
        with caplog.at_level(logging.WARNING, logger="simvuefs.write.spool"):
            assert spool.recover() == []
        assert (spool.abandoned_dir / f"{spool_id}.data").read_bytes() == b"content"
        assert "its upload record is missing" in caplog.text
    finally:
        spool.close()


def test_drop_forgets_an_upload_and_clear_landed_the_kept_content(spool: Spool) -> None:
    dropped = _staged(spool, b"dropped")
    spool.commit(_record(dropped))
    spool.drop(dropped)
    assert not spool.record_path(dropped).exists()
    assert not spool.data_path(dropped).exists()

    landed = _staged(spool, b"landed")
    spool.commit(_record(landed))
    spool.land(landed)
    spool.save(_record(landed))  # a record left beside landed content: it landed
    spool.clear_landed()
    assert not list(spool.landed_dir.iterdir())
    assert read_pending(spool.root) == []


def test_read_pending_lists_readable_records_oldest_first(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    newer = _record(new_spool_id(), created=now + timedelta(minutes=1))
    older = _record(new_spool_id(), created=now)
    for record in (newer, older):
        spool.save(record)
    broken = spool.record_path(new_spool_id())
    broken.write_bytes(b"{not json")
    (spool.pending_dir / "not-a-record.json").write_bytes(b"{}")
    with caplog.at_level(logging.WARNING, logger="simvuefs.write.spool"):
        assert read_pending(spool.root) == [older, newer]
    assert str(broken) in caplog.text
    assert read_pending(spool.root / "nowhere") == []


def test_checkpoints_keep_the_last_fsynced_content_across_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = Spool.open(root, min_free=0)
    spool_id = _staged(spool, b"first")
    base = _record(spool_id, checksum="", size=0, replaces=("old",))
    first = spool.checkpoint(base, 5)
    assert (first.checkpoint, first.checksum, first.size) == (1, sha256(b"first"), 5)
    fd = os.open(spool.staging_path(spool_id), os.O_WRONLY)
    write_at(fd, 5, b" second")
    second = spool.checkpoint(first, 12)
    assert second.checkpoint == 2
    assert not spool.checkpoint_path(spool_id, 1).exists()  # the older copy goes after
    write_at(fd, 12, b" never fsynced")
    os.close(fd)
    # A crash: the copy of an fsync that never returned is left beside the record.
    spool.checkpoint_path(spool_id, 3).write_bytes(b"partial")
    spool.close()

    spool = Spool.open(root, min_free=0)
    [record] = spool.recover()
    assert (record.checkpoint, record.checksum, record.replaces) == (
        0,
        sha256(b"first second"),
        ("old",),
    )
    assert spool.data_path(spool_id).read_bytes() == b"first second"
    assert (spool.abandoned_dir / spool_id).read_bytes() == b"first second never fsynced"
    assert list(root.glob("pending/*.ckpt*")) == []
    spool.close()


def test_a_commit_after_checkpoints_replaces_them_and_a_drop_removes_them(
    spool: Spool,
) -> None:
    kept = _staged(spool, b"content")
    spool.checkpoint(_record(kept, checksum="", size=0), 7)
    spool.commit(_record(kept))
    assert spool.data_path(kept).read_bytes() == b"content"
    assert JournalRecord.from_bytes(spool.record_path(kept).read_bytes(), kept).checkpoint == 0
    assert list(spool.pending_dir.glob("*.ckpt*")) == []
    dropped = _staged(spool, b"gone")
    spool.checkpoint(_record(dropped, checksum="", size=0), 4)
    spool.drop_staged(dropped)
    assert not spool.record_path(dropped).exists()
    assert list(spool.pending_dir.glob(f"{dropped}*")) == []

"""Tests of simvuefs.write.staged: a written file's state, handles and transitions (no I/O)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from simvuefs.errors import LocalError
from simvuefs.models import Artifact
from simvuefs.write.spool import JournalRecord
from simvuefs.write.staged import FileState, PendingUpload, StagedFile

SPOOL_ID = "0" * 32
CREATED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _record(**changes: Any) -> JournalRecord:
    values: dict[str, Any] = {
        "id": SPOOL_ID,
        "run_id": "run-1",
        "category": "input",
        "name": "mesh.dat",
        "checksum": "c" * 64,
        "size": 7,
        "created": CREATED,
        **changes,
    }
    return JournalRecord(**values)


def _staged() -> StagedFile:
    return StagedFile(SPOOL_ID, "run-1", "input", "mesh.dat", Path("/spool/staging/x"), 1.0)


def test_handles_count_writers_and_leave_the_fd_to_close_to_the_caller() -> None:
    f = _staged()
    with pytest.raises(LocalError) as not_open:
        f.writable_fd()
    assert not_open.value.errno == errno.EBADF
    f.add_handle(write=True, fd=7)
    f.add_handle(write=False)
    assert (f.fd, f.writing, f.idle, f.writable_fd()) == (7, True, False, 7)
    f.drop_handle(write=True)
    assert (f.writing, f.idle) == (False, False)
    f.drop_handle(write=False)
    assert f.idle
    assert f.take_fd() == 7
    assert (f.fd, f.idle, f.take_fd()) == (None, False, None)


def test_a_file_lives_from_staged_to_landed_and_lands_again_after_a_rename() -> None:
    f = _staged()
    f.rename("renamed.dat")
    f.add_handle(write=True, fd=3)
    f.commit(_record(name="renamed.dat"), Path("/spool/pending/x.data"))
    assert (f.state, f.checksum, f.data) == (
        FileState.PENDING,
        "c" * 64,
        Path("/spool/pending/x.data"),
    )
    with pytest.raises(LocalError, match="committed") as committed:
        f.writable_fd()
    assert committed.value.errno == errno.EBADF

    f.update_record(_record(name="renamed.dat", attempts=2, last_error="down"))
    assert (f.attempts, f.last_error, f.attached) == (2, "down", False)
    f.update_record(_record(name="renamed.dat", artifact_id="a1", stage="attached"))
    assert f.attached

    artifact = Artifact(id="a1", name="renamed.dat")
    f.retire(artifact, Path("/spool/landed/x"))
    assert (f.state, f.artifact, f.record, f.attempts, f.generation) == (
        FileState.LANDED,
        artifact,
        None,
        0,
        1,
    )
    assert f.attached

    f.relaunch(_record(name="final.dat", replaces=("a1",)), Path("/spool/pending/x.data"))
    assert (f.state, f.name, f.artifact, f.generation) == (FileState.PENDING, "final.dat", None, 2)
    assert f.key == ("run-1", "input", "final.dat")


def test_transitions_refuse_the_wrong_state() -> None:
    f = _staged()
    with pytest.raises(AssertionError):
        f.retire(Artifact(id="a", name="mesh.dat"), Path("/x"))
    with pytest.raises(AssertionError):
        f.relaunch(_record(), Path("/x"))
    f.commit(_record(), Path("/x"))
    with pytest.raises(AssertionError):
        f.commit(_record(), Path("/x"))
    with pytest.raises(AssertionError):
        f.rename("other.dat")


def test_a_discarded_file_can_still_be_written_through_its_open_handle() -> None:
    f = _staged()
    f.add_handle(write=True, fd=5)
    f.discard()
    assert (f.state, f.record, f.writable_fd()) == (FileState.DISCARDED, None, 5)


def test_a_resumed_record_is_a_pending_file_and_a_pending_upload() -> None:
    record = _record(attempts=1, last_error="boom")
    f = StagedFile.from_record(record, Path("/spool/pending/x.data"))
    assert (f.state, f.size, f.mtime, f.checksum, f.record) == (
        FileState.PENDING,
        7,
        CREATED.timestamp(),
        "c" * 64,
        record,
    )
    assert PendingUpload.from_record(record, uploading=True) == PendingUpload(
        run_id="run-1",
        category="input",
        name="mesh.dat",
        size=7,
        created=CREATED,
        attempts=1,
        last_error="boom",
        state="uploading",
        spool_id=SPOOL_ID,
    )

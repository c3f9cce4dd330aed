"""Tests of simvuefs.write.mailbox: host-side requests to the process holding a spool, and
export marks. Files only, in a temporary spool; the holder is a trio task with a fake
``apply`` (the real Uploader is tested in tests/server/test_refused_uploads.py, a real
mount in tests/mount/test_pending_mount.py)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import sha256

from simvuefs.control import pending
from simvuefs.logs import UsageError
from simvuefs.write import mailbox
from simvuefs.write.mailbox import Answer, Request
from simvuefs.write.spool import JournalRecord, Spool, new_spool_id, read_pending

CONTENT = b"refused content"


def _pending(spool: Spool, **changes: Any) -> JournalRecord:
    """Leave one pending upload of CONTENT in *spool*; return its record."""
    fields: dict[str, Any] = {
        "id": new_spool_id(),
        "run_id": "run-1",
        "category": "input",
        "name": "mesh.dat",
        "checksum": sha256(CONTENT),
        "size": len(CONTENT),
        "created": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
    }
    record = JournalRecord(**{**fields, **changes})
    spool.data_path(record.id).write_bytes(CONTENT)
    spool.save(record)
    return record


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Spool.open(tmp_path / "spool", min_free=0).close()
    return tmp_path / "spool"


def test_a_spool_nobody_holds_is_changed_directly(root: Path) -> None:
    with mailbox.unlocked_spool(root) as spool:
        assert spool is not None
        failed = _pending(spool, artifact_id="a1", stage="marked", failed="EACCES", attempts=1)
        waiting = _pending(spool, name="waiting.dat")
        attached = _pending(spool, name="attached.dat", artifact_id="a2", stage="attached")
        # a running mount would refuse to open it meanwhile
        with pytest.raises(Exception, match="in use by another simvuefs process"):
            Spool.open(root, min_free=0)
        retried = mailbox.apply_unlocked(spool, Request("retry", (failed.id, "f" * 32)))
        assert retried == Answer((failed.id,), {"f" * 32: mailbox.NOT_PENDING})
        dropped = mailbox.apply_unlocked(spool, Request("drop", (waiting.id, attached.id)))
        assert dropped == Answer((waiting.id,), {attached.id: mailbox.ATTACHED})
    after = {record.id: record for record in read_pending(root)}
    assert set(after) == {failed.id, attached.id}
    assert (after[failed.id].failed, after[failed.id].stage) == ("", "new")  # a new artifact
    assert not (root / "pending" / f"{waiting.id}.data").exists()


def test_a_drop_of_failed_uploads_keeps_one_no_longer_failed(root: Path) -> None:
    """``pending drop`` without --all picked failed files; one was retried (or renamed)
    before the drop was applied: it is kept."""
    with mailbox.unlocked_spool(root) as spool:
        assert spool is not None
        failed = _pending(spool, artifact_id="a1", stage="marked", failed="EACCES", attempts=1)
        retried = _pending(spool, name="retried.dat")
        request = Request("drop", (failed.id, retried.id), only_failed=True)
        assert Request.from_bytes(request.to_bytes()) == request
        answer = mailbox.apply_unlocked(spool, request)
        assert answer == Answer((failed.id,), {retried.id: mailbox.NOT_FAILED})
    assert [record.id for record in read_pending(root)] == [retried.id]
    assert Request.from_bytes(b'{"action": "drop", "ids": []}') == Request("drop", ())
    with pytest.raises(ValueError, match="only_failed"):
        Request.from_bytes(b'{"action": "drop", "ids": [], "only_failed": "yes"}')


def test_a_held_spool_is_not_locked_again(root: Path) -> None:
    holder = Spool.open(root, min_free=0)
    try:
        with mailbox.unlocked_spool(root) as spool:
            assert spool is None
    finally:
        holder.close()


async def test_the_holder_answers_requests_and_tidies_after_a_crash(root: Path) -> None:
    applied: list[Request] = []

    async def apply(request: Request) -> Answer:
        applied.append(request)
        return Answer(request.ids)

    # a claim left by a holder that died, an old answer nobody collected, and a fresh one
    (root / "pending" / "dead.taken").write_bytes(Request("drop", ("x",)).to_bytes())
    stale = root / "pending" / "old.answer"
    stale.write_bytes(Answer().to_bytes())
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = root / "pending" / "new.answer"
    fresh.write_bytes(Answer().to_bytes())
    mailbox.tidy(root)
    assert not stale.exists()
    assert fresh.exists()
    # its command already reported a failure: answered so, never applied
    assert not (root / "pending" / "dead.taken").exists()
    assert not (root / "pending" / "dead.request").exists()
    assert mailbox.collect(root, "dead") == Answer(error=mailbox.NOT_ANSWERED)

    (root / "pending" / "junk.request").write_bytes(b"not json")
    rid = mailbox.post(root, Request("drop", ("y",)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.serve, root, apply)
        with trio.fail_after(10):
            while not (root / "pending" / "junk.answer").exists():  # noqa: ASYNC110
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert mailbox.collect(root, rid) == Answer(("y",))
    assert applied == [Request("drop", ("y",))]
    assert mailbox.collect(root, "junk") == Answer(error="unreadable request")
    leftovers = {p.suffix for p in (root / "pending").iterdir()}
    assert leftovers == {".answer"}  # fresh: nothing taken is left behind
    assert not mailbox.withdraw(root, rid)  # taken and answered


def test_a_holder_that_never_answers_fails_the_command(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pending, "ANSWER_TIMEOUT", 0.3)
    holder = Spool.open(root, min_free=0)
    try:
        with pytest.raises(UsageError, match="did not take the request within"):
            pending.submit(root, Request("retry", ()))
        assert not list((root / "pending").glob("*.request"))  # withdrawn
    finally:
        holder.close()
    # once it is gone, the command does the change itself
    answer, running = pending.submit(root, Request("retry", ()))
    assert (answer, running) == (Answer(), False)


def test_export_marks_name_a_copy_that_must_still_be_there(root: Path, tmp_path: Path) -> None:
    with mailbox.unlocked_spool(root) as spool:
        assert spool is not None
        record = _pending(spool)
    copy = tmp_path / "copy.dat"
    assert mailbox.exported_copy(root, record) is None
    copy.write_bytes(CONTENT)
    mailbox.mark_exported(root, record, copy)
    assert mailbox.exported_copy(root, record) == copy
    copy.write_bytes(CONTENT + b"changed")
    assert mailbox.exported_copy(root, record) is None
    copy.unlink()
    assert mailbox.exported_copy(root, record) is None
    # the mark goes with the record, and a mark left without one is removed at start
    spool = Spool.open(root, min_free=0)
    try:
        spool.drop(record.id)
        assert not list((root / "pending").iterdir())
        orphan = _pending(spool)
        mailbox.mark_exported(root, orphan, copy)
        spool.record_path(orphan.id).unlink()
        spool.recover()
        assert [p.parent.name for p in root.rglob(f"{orphan.id}*")] == ["abandoned"]
    finally:
        spool.close()

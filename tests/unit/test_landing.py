"""Tests of simvuefs.write.landing: the journaled upload sequence and its retries.

The Lander runs for real on a real spool in a temporary directory; the server is a fake
backend in memory that records every call and fails the calls a test asks it to fail.
(The Uploader against a real devserver is tested in tests/server/test_upload.py.)
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from helpers import settings_for, sha256

from simvuefs.backends.protocol import SimvueBackend
from simvuefs.config import Settings
from simvuefs.errors import (
    AuthError,
    DeadlineExceeded,
    NotFound,
    RateLimited,
    ServerError,
    StatusError,
    UploadRefused,
)
from simvuefs.models import Artifact, UploadSlot
from simvuefs.write import landing
from simvuefs.write.landing import Lander, backoff
from simvuefs.write.spool import JournalRecord, Spool, new_spool_id, write_at
from simvuefs.write.staged import FileState, StagedFile

RUN = "run-1"
CONTENT = b"simulation output"


@dataclass
class FakeBackend:
    """The upload half of a SimvueBackend, in memory.

    *calls* lists ``(method, argument)`` in order. ``fail[method]`` holds exceptions, one
    raised per call until empty; ``block[method]`` makes the call wait for that event;
    creating an artifact with a name in *refused* always fails. Content whose checksum the
    fake knows is deduplicated (``url`` None). Artifacts it did not create read back as
    "old name" with CONTENT's checksum; *shared* lists runs, besides the one it was
    attached to, that an artifact is attached to.
    """

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, list[Exception]] = field(default_factory=dict)
    block: dict[str, trio.Event] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    created: dict[str, str] = field(default_factory=dict)  # artifact id -> name
    attached: dict[str, str] = field(default_factory=dict)  # artifact id -> run id
    shared: dict[str, list[str]] = field(default_factory=dict)  # artifact id -> other runs
    checksums: dict[str, str] = field(default_factory=dict)  # artifact id -> another checksum
    call_times: list[float] = field(default_factory=list)  # trio time of each call
    running: int = 0
    most_running: int = 0

    async def _call(self, method: str, argument: str) -> None:
        self.calls.append((method, argument))
        self.call_times.append(trio.current_time())
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if method in self.block:
                await self.block[method].wait()
            if self.fail.get(method):
                raise self.fail[method].pop(0)
        finally:
            self.running -= 1

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    async def create_artifact(
        self, *, name: str, original_path: str, size: int, mime_type: str, checksum: str
    ) -> UploadSlot:
        await self._call("create", name)
        if name in self.refused:
            raise ServerError(f"cannot create {name}", status=503)
        artifact_id = f"artifact-{len(self.created) + 1}"
        self.created[artifact_id] = name
        url = None if checksum in self.known else f"http://storage.test/{artifact_id}"
        return UploadSlot(artifact_id=artifact_id, url=url)

    async def upload_content(self, slot: UploadSlot, path: Path, size: int, filename: str) -> None:
        await self._call("upload", slot.artifact_id)
        assert await trio.Path(path).read_bytes() == CONTENT
        assert size == len(CONTENT)

    async def mark_uploaded(self, artifact_id: str) -> None:
        await self._call("mark", artifact_id)

    async def attach(self, run_id: str, artifact_id: str, category: str) -> None:
        await self._call("attach", artifact_id)
        self.attached[artifact_id] = run_id

    async def get_artifact(self, artifact_id: str) -> Artifact:
        await self._call("get", artifact_id)
        name = self.created.get(artifact_id, "old name")
        checksum = self.checksums.get(artifact_id, sha256(CONTENT))
        return Artifact(id=artifact_id, name=name, size=len(CONTENT), checksum=checksum)

    async def delete_artifact(self, artifact_id: str) -> None:
        await self._call("delete", artifact_id)

    async def artifact_runs(self, artifact_id: str) -> list[str]:
        await self._call("runs", artifact_id)
        own = [self.attached[artifact_id]] if artifact_id in self.attached else []
        return own + self.shared.get(artifact_id, [])


@dataclass
class Landed:
    """The files on_landed was called with, and an event per landing."""

    files: list[StagedFile] = field(default_factory=list)
    event: trio.Event = field(default_factory=trio.Event)

    def __call__(self, f: StagedFile) -> None:
        self.files.append(f)
        self.event.set()
        self.event = trio.Event()


@dataclass
class Harness:
    backend: FakeBackend
    spool: Spool
    lander: Lander
    landed: Landed

    def pending_file(self, name: str = "mesh.dat", **changes: Any) -> StagedFile:
        """Spool CONTENT as a committed upload of *name*; return its PENDING file, tracked."""
        record = JournalRecord(
            id=new_spool_id(),
            run_id=RUN,
            category="input",
            name=name,
            checksum=sha256(CONTENT),
            size=len(CONTENT),
            created=datetime.now(UTC),
            **changes,
        )
        fd = self.spool.create(record.id)
        write_at(fd, 0, CONTENT)
        os.close(fd)
        self.spool.commit(record)
        f = StagedFile.from_record(record, self.spool.data_path(record.id))
        self.lander.track(f, retry_now=False)
        return f

    def saved(self, f: StagedFile) -> JournalRecord:
        """The record of *f* as the journal on disk holds it."""
        return JournalRecord.from_bytes(self.spool.record_path(f.spool_id).read_bytes(), f.spool_id)


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "upload_retry_initial": 0.01,
        "upload_retry_max": 0.05,
        "shutdown_upload_wait": 5.0,
        **overrides,
    }
    return settings_for(None, **values)


@asynccontextmanager
async def _lander(
    tmp_path: Path, on_landed: Callable[[StagedFile], None] | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    backend = FakeBackend()
    spool = Spool.open(tmp_path / "spool", min_free=0)
    landed = Landed()
    settings = _settings(**overrides)
    try:
        async with trio.open_nursery() as nursery:
            client = cast(SimvueBackend, backend)
            lander = Lander(client, settings, spool, nursery, on_landed or landed)
            yield Harness(backend, spool, lander, landed)
            await lander.drain()
            nursery.cancel_scope.cancel()
    finally:
        spool.close()


async def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll *condition* (state changed by background tasks) until true; fail after *seconds*."""
    with trio.fail_after(seconds):
        while True:
            if condition():
                return
            await trio.sleep(0.01)


# -- the step sequence ----------------------------------------------------------------------


async def test_an_attempt_follows_the_official_sequence_and_retires_the_file(
    tmp_path: Path,
) -> None:
    async with _lander(tmp_path) as h:
        f = h.pending_file("system/mesh.dat")
        artifact = await h.lander.land(f)
        assert artifact == Artifact(
            id="artifact-1", name="system/mesh.dat", size=len(CONTENT), checksum=sha256(CONTENT)
        )
        assert h.backend.calls == [
            ("create", "system/mesh.dat"),
            ("upload", "artifact-1"),
            ("mark", "artifact-1"),
            ("attach", "artifact-1"),
            ("get", "artifact-1"),
        ]
        assert h.backend.attached == {"artifact-1": RUN}
        assert f.state is FileState.LANDED
        assert f.artifact == artifact
        assert f.record is None
        assert h.landed.files == [f]
        # the record is gone; the content is kept a while for renames
        assert not h.spool.record_path(f.spool_id).exists()
        assert h.spool.landed_path(f.spool_id).read_bytes() == CONTENT
        assert f.data == h.spool.landed_path(f.spool_id)
        assert h.lander.pending() == []
        assert (h.lander.landed, h.lander.failed, h.lander.bytes_uploaded) == (1, 0, len(CONTENT))
        # landing again is a no-op that returns the artifact
        assert await h.lander.land(f) == artifact
        assert len(h.backend.calls) == 5


async def test_known_content_is_neither_uploaded_nor_marked(tmp_path: Path) -> None:
    async with _lander(tmp_path) as h:
        h.backend.known.add(sha256(CONTENT))
        f = h.pending_file()
        await h.lander.land(f)
        assert h.backend.methods() == ["create", "attach", "get"]
        assert h.lander.bytes_uploaded == 0


@pytest.mark.parametrize(
    ("failing", "stage", "retried"),
    [
        # before anything is stored: start over with a new artifact (never attached)
        ("create", "new", ["create", "upload", "mark", "attach", "get"]),
        ("upload", "new", ["create", "upload", "mark", "attach", "get"]),
        # later steps resume after the stage the journal records: never a second attach
        ("mark", "stored", ["mark", "attach", "get"]),
        ("attach", "marked", ["attach", "get"]),
        ("get", "attached", ["get"]),
    ],
)
async def test_a_failed_step_is_journaled_and_the_next_attempt_resumes_after_it(
    tmp_path: Path, failing: str, stage: str, retried: list[str]
) -> None:
    async with _lander(tmp_path, upload_retry_initial=60.0) as h:  # no background retry
        h.backend.fail[failing] = [ServerError("storage is down", status=503)]
        f = h.pending_file()
        with pytest.raises(ServerError):
            await h.lander.land(f)
        saved = h.saved(f)
        assert saved == f.record
        assert saved.stage == stage
        assert (saved.attempts, saved.last_error) == (1, "storage is down")
        assert (f.attempts, f.last_error) == (1, "storage is down")
        assert f.attached is (stage == "attached")
        assert f.state is FileState.PENDING
        assert h.lander.failed == 1

        before = len(h.backend.calls)
        await h.lander.land(f)
        assert h.backend.methods()[before:] == retried
        assert f.state is FileState.LANDED
        assert f.artifact is not None
        assert h.backend.attached == {f.artifact.id: RUN}  # an abandoned artifact is not


async def test_replaced_artifacts_are_deleted_after_the_landing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _lander(tmp_path, upload_retry_initial=60.0) as h:
        f = h.pending_file(replaces=("gone", "kept", "flaky"))
        h.backend.fail["delete"] = [
            NotFound("no such artifact", status=404),  # already gone: fine
            StatusError("forbidden", status=403),  # refused for good: a warning
            ServerError("try later", status=500),  # fails the attempt
        ]
        with (
            caplog.at_level(logging.WARNING, logger="simvuefs.write.deletes"),
            pytest.raises(ServerError),
        ):
            await h.lander.land(f)
        assert "artifact kept, replaced by mesh.dat, is not deleted: the server " in (caplog.text)
        saved = h.saved(f)
        assert (saved.stage, saved.replaces) == ("attached", ("flaky",))

        before = len(h.backend.calls)
        await h.lander.land(f)
        assert h.backend.calls[before:] == [
            ("get", "artifact-1"),
            ("get", "flaky"),  # the checks before a delete: content and runs
            ("runs", "flaky"),
            ("delete", "flaky"),
        ]
        assert f.state is FileState.LANDED


async def test_an_attempt_that_overruns_its_deadline_fails_and_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(landing, "UPLOAD_BASE_SECONDS", 0.0)
    monkeypatch.setattr(landing, "UPLOAD_SECONDS_PER_MIB", 0.0)
    async with _lander(tmp_path, request_timeout=0.2, upload_retry_initial=60.0) as h:
        h.backend.block["attach"] = trio.Event()  # never set
        f = h.pending_file()
        with pytest.raises(DeadlineExceeded, match="did not finish within"):
            await h.lander.land(f)
        assert h.saved(f).stage == "marked"
        assert f.attempts == 1


async def test_a_cancelled_attempt_returns_none_and_changes_nothing(tmp_path: Path) -> None:
    async with _lander(tmp_path) as h:
        h.backend.block["upload"] = trio.Event()
        f = h.pending_file()
        result: list[Artifact | None] = []

        async def land() -> None:
            result.append(await h.lander.land(f))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(land)
            await _wait_for(lambda: h.backend.methods() == ["create", "upload"])
            assert [upload.state for upload in h.lander.uploads()] == ["uploading"]
            h.lander.cancel_attempt(f)
        assert result == [None]
        assert [upload.state for upload in h.lander.uploads()] == ["waiting"]
        assert f.state is FileState.PENDING
        assert (f.attempts, h.lander.failed) == (0, 0)  # a cancellation is not a failure


# -- background retries ---------------------------------------------------------------------


def test_backoff_doubles_from_the_initial_delay_up_to_the_maximum() -> None:
    settings = _settings(upload_retry_initial=2.0, upload_retry_max=30.0)
    for attempts, full in [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0)]:
        delays = [backoff(attempts, settings) for _ in range(50)]
        assert all(full * 0.5 <= delay < full for delay in delays), (attempts, delays)
    assert backoff(10_000, settings) < 30.0  # no overflow however long it fails


async def test_a_failed_upload_lands_in_the_background(tmp_path: Path) -> None:
    async with _lander(tmp_path) as h:
        h.backend.fail["create"] = [ServerError("down", status=503) for _ in range(3)]
        f = h.pending_file()
        with pytest.raises(ServerError):
            await h.lander.land(f)
        await _wait_for(lambda: f.state is FileState.LANDED)
        assert h.backend.methods() == ["create"] * 3 + ["create", "upload", "mark", "attach", "get"]
        assert (h.lander.failed, h.lander.landed) == (3, 1)
        assert h.landed.files == [f]


async def test_tracked_records_are_retried_at_once_two_at_a_time(tmp_path: Path) -> None:
    async with _lander(tmp_path) as h:
        gate = h.backend.block["create"] = trio.Event()
        files = [h.pending_file(f"file{i}.dat") for i in range(4)]
        for f in files:
            h.lander.retry_now(f)
        await _wait_for(lambda: h.backend.running == landing.BACKGROUND_UPLOADS)
        await trio.sleep(0.1)
        assert h.backend.running == landing.BACKGROUND_UPLOADS
        gate.set()
        await _wait_for(lambda: all(f.state is FileState.LANDED for f in files))
        assert h.backend.most_running == landing.BACKGROUND_UPLOADS


async def test_drain_waits_for_attempts_in_progress_and_stops_retrying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _lander(tmp_path) as h:
        h.backend.refused.add("failing.dat")
        failing = h.pending_file("failing.dat")
        slow = h.pending_file("slow.dat")
        with pytest.raises(ServerError):
            await h.lander.land(failing)  # now its loop retries every 10-50 ms
        gate = h.backend.block["upload"] = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.lander.land, slow)
            await _wait_for(lambda: "upload" in h.backend.methods())
            with caplog.at_level(logging.WARNING, logger="simvuefs.write.landing"):
                nursery.start_soon(h.lander.drain)
                await trio.sleep(0.1)
                assert slow.state is FileState.PENDING  # drain waits for it
                gate.set()
        assert slow.state is FileState.LANDED
        assert failing.state is FileState.PENDING
        assert "1 upload(s) still pending" in caplog.text
        calls = len(h.backend.calls)
        await trio.sleep(0.2)  # well past the backoff: no retry after drain
        assert len(h.backend.calls) == calls


async def test_landed_content_is_dropped_after_the_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(landing, "LANDED_RETENTION", 0.05)
    async with _lander(tmp_path) as h:
        f = h.pending_file()
        await h.lander.land(f)
        path = h.spool.landed_path(f.spool_id)
        assert path.exists()
        await _wait_for(lambda: not path.exists())


async def test_a_failing_landing_callback_is_logged_and_the_file_still_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(f: StagedFile) -> None:
        raise RuntimeError("callback bug")

    async with _lander(tmp_path, on_landed=broken) as h:
        f = h.pending_file()
        with caplog.at_level(logging.ERROR, logger="simvuefs.write.landing"):
            assert await h.lander.land(f) is not None
        assert f.state is FileState.LANDED
        assert h.lander.landed == 1
        assert "the landing callback failed" in caplog.text


# -- final refusals: journaled, never retried on their own ---------------------------------------


async def test_a_final_refusal_is_journaled_and_not_retried_until_cleared(tmp_path: Path) -> None:
    async with _lander(tmp_path) as h:  # retries every 10-50 ms, were it retried
        h.backend.fail["attach"] = [AuthError("not your run", status=403)]
        f = h.pending_file()
        with pytest.raises(UploadRefused, match="not your run") as refused:
            await h.lander.land(f)
        assert refused.value.errno == errno.EACCES
        saved = h.saved(f)
        assert (saved.failed, saved.last_error, saved.attempts) == ("EACCES", "not your run", 1)
        assert saved.stage == "marked"
        assert f.failed
        assert [u.state for u in h.lander.uploads()] == ["failed"]
        calls = len(h.backend.calls)
        await trio.sleep(0.3)  # many backoff periods
        assert len(h.backend.calls) == calls
        # close() again: the journaled refusal, without a request
        with pytest.raises(UploadRefused) as again:
            await h.lander.land(f)
        assert again.value.errno == errno.EACCES
        assert len(h.backend.calls) == calls
        # `simvuefs pending retry`: a new artifact (the refused one was never attached)
        await h.lander.retry(f)
        await _wait_for(lambda: f.state is FileState.LANDED)
        assert h.backend.methods()[calls:] == ["create", "upload", "mark", "attach", "get"]
        assert h.backend.attached == {"artifact-2": RUN}


async def test_a_failed_record_found_at_start_waits_for_a_retry(tmp_path: Path) -> None:
    async with _lander(tmp_path) as h:
        f = h.pending_file(failed="EINVAL", attempts=1, last_error="name not allowed")
        h.lander.track(f, retry_now=True)  # as at start
        await trio.sleep(0.2)
        assert h.backend.calls == []
        with pytest.raises(UploadRefused, match="name not allowed") as refused:
            await h.lander.land(f)
        assert refused.value.errno == errno.EINVAL


async def test_transient_failures_keep_retrying_and_honour_retry_after(tmp_path: Path) -> None:
    # backoff 5-50 ms; a Retry-After is honoured up to upload_retry_max
    async with _lander(tmp_path, upload_retry_max=1.0) as h:
        h.backend.fail["create"] = [
            RateLimited("slow down", retry_after=0.8),
            StatusError("request timeout", status=408),
            AuthError("token expired", status=401),
        ]
        f = h.pending_file()
        with pytest.raises(RateLimited):
            await h.lander.land(f)
        await _wait_for(lambda: f.state is FileState.LANDED)
        assert not f.failed
        creates = [
            when
            for (method, _), when in zip(h.backend.calls, h.backend.call_times, strict=True)
            if method == "create"
        ]
        assert len(creates) == 4
        assert creates[1] - creates[0] >= 0.8  # what the 429 asked, not the backoff


# -- deletes of replaced artifacts: only when safe ----------------------------------------------


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"shared": {"old": ["run-2"]}}, "it is attached to other runs too (run-2)"),
        (
            {"checksums": {"old": "0" * 64}},
            "the server's record of it does not hold the checksum it had here",
        ),
        ({}, "deletes are off (--no-delete)"),
    ],
    ids=["attached-elsewhere", "other-content", "no-delete"],
)
async def test_an_artifact_that_is_not_safe_to_delete_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, setup: dict[str, Any], reason: str
) -> None:
    overrides = {"delete_artifacts": False} if not setup else {}
    async with _lander(tmp_path, **overrides) as h:
        for name, value in setup.items():
            setattr(h.backend, name, value)
        f = h.pending_file(replaces=("old",))
        with caplog.at_level(logging.WARNING, logger="simvuefs.write.deletes"):
            await h.lander.land(f)
        assert f.state is FileState.LANDED
        assert "delete" not in h.backend.methods()
        assert f"artifact old, replaced by mesh.dat, is not deleted: {reason}" in (caplog.text)


async def test_the_artifact_just_landed_is_never_deleted(tmp_path: Path) -> None:
    async with _lander(tmp_path) as h:
        f = h.pending_file(replaces=("artifact-1",))  # the id the create will answer
        await h.lander.land(f)
        assert h.backend.methods() == ["create", "upload", "mark", "attach", "get"]


async def test_a_4xx_after_the_attach_is_never_a_refusal_of_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _lander(tmp_path, upload_retry_initial=60.0) as h:
        # The read-back answers 422 once: the file is attached, so this is retried.
        h.backend.fail["get"] = [StatusError("unprocessable", status=422)]
        f = h.pending_file()
        with pytest.raises(StatusError):
            await h.lander.land(f)
        saved = h.saved(f)
        assert (saved.stage, saved.failed) == ("attached", "")
        await h.lander.land(f)
        assert f.state is FileState.LANDED


async def test_a_delete_check_the_server_refuses_keeps_both_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _lander(tmp_path) as h:
        # A server that rejects the runs filter: the old name is kept, the file lands.
        h.backend.fail["runs"] = [StatusError("bad filter", status=422)]
        f = h.pending_file(replaces=("old",))
        with caplog.at_level(logging.WARNING, logger="simvuefs.write.deletes"):
            await h.lander.land(f)
        assert f.state is FileState.LANDED
        assert "delete" not in h.backend.methods()
        assert "refused to say whether it is safe (status 422)" in caplog.text


async def test_a_long_retry_after_does_not_delay_background_retries_past_the_maximum(
    tmp_path: Path,
) -> None:
    async with _lander(tmp_path, upload_retry_initial=0.1, upload_retry_max=0.3) as h:
        h.backend.fail["create"] = [RateLimited("slow down", status=429, retry_after=3600.0)]
        f = h.pending_file()
        with pytest.raises(RateLimited):
            await h.lander.land(f)
        # Uncapped, the background retry would wait an hour; capped, it lands at once.
        await _wait_for(lambda: f.state is FileState.LANDED)

"""simvuefs.localio: atomic writes, directory fsync, hashed copies, local errors and the
rate-limited warner."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path

import pytest

from simvuefs import localio
from simvuefs.localio import (
    COPY_CHUNK,
    TEMP_SUFFIX,
    RateLimitedWarner,
    copy_hashed,
    fsync_dir,
    local_error,
    write_atomically,
)


@pytest.mark.parametrize("durable", [True, False])
def test_write_atomically_replaces_the_file_and_leaves_no_temporary(
    tmp_path: Path, durable: bool
) -> None:
    target = tmp_path / "record.json"
    target.write_bytes(b"old")
    write_atomically(target, b"new content", durable=durable)
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_write_atomically_uses_the_given_temporary(tmp_path: Path) -> None:
    (tmp_path / "drafts").mkdir()
    temp = tmp_path / "drafts" / "x.record.tmp"
    target = tmp_path / "x.json"
    write_atomically(target, b"{}", temp=temp)
    assert target.read_bytes() == b"{}"
    assert not temp.exists()


def test_durable_writes_sync_the_file_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(localio.os, "fsync", fsync)
    write_atomically(tmp_path / "a", b"1")
    assert synced == ["file", "dir"]
    synced.clear()
    write_atomically(tmp_path / "b", b"2", durable=False)
    assert synced == []
    fsync_dir(tmp_path)
    assert synced == ["dir"]


def test_copy_hashed_copies_syncs_and_returns_the_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = os.urandom(2 * COPY_CHUNK + 5)  # several reads
    source = tmp_path / "source"
    source.write_bytes(content)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)  # the whole content is written before the sync
        real_fsync(fd)

    monkeypatch.setattr(localio.os, "fsync", fsync)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "plain").write_bytes(b"longer than nothing")
    old = os.umask(0o022)
    try:
        digest = copy_hashed(source, tmp_path / "private", mode=0o600, exclusive=True)
        assert copy_hashed(source, tmp_path / "new") == digest
        assert copy_hashed(tmp_path / "empty", tmp_path / "plain") == hashlib.sha256().hexdigest()
    finally:
        os.umask(old)
    assert digest == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "private").read_bytes() == content
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o644  # 0o666 less the umask
    assert (tmp_path / "plain").read_bytes() == b""  # not exclusive: truncated
    assert synced == [len(content), len(content), 0]
    with pytest.raises(FileExistsError):
        copy_hashed(source, tmp_path / "private", exclusive=True)
    assert (tmp_path / "private").read_bytes() == content  # untouched


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_bytes(b"old")
    (tmp_path / f"record.json{TEMP_SUFFIX}").mkdir()  # the temporary cannot be opened
    with pytest.raises(IsADirectoryError):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOSPC, errno.ENOSPC),
        (errno.EDQUOT, errno.EDQUOT),
        (errno.EACCES, errno.EACCES),
        (errno.EROFS, errno.EROFS),
        (errno.EIO, errno.EIO),
        (errno.ENOTDIR, errno.EIO),
        (errno.ENOENT, errno.EIO),
    ],
)
def test_local_error_passes_on_only_errnos_a_caller_can_act_on(code: int, expected: int) -> None:
    error = local_error(OSError(code, os.strerror(code)), "cannot write")
    assert error.errno == expected
    assert str(error) == f"cannot write: {os.strerror(code)}"


def test_local_error_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(FileNotFoundError) as raised:
        missing.read_bytes()
    error = local_error(raised.value, "cannot read")
    assert (error.errno, str(error)) == (errno.EIO, f"cannot read: {missing} is missing")


def test_the_warner_warns_once_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(localio.time, "monotonic", lambda: now[0])
    logger = logging.getLogger("simvuefs.test_localio")
    warner = RateLimitedWarner(logger, interval=60.0)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        for item in range(3):
            warner.warn("skipped %s", item)
        now[0] += 60.0
        warner.warn("skipped %s", "late")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "skipped 0 (0 more since the last warning)"),
        (logging.DEBUG, "skipped 1"),
        (logging.DEBUG, "skipped 2"),
        (logging.WARNING, "skipped late (2 more since the last warning)"),
    ]


def test_the_warner_keeps_a_separate_interval_per_key(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(localio.time, "monotonic", lambda: now[0])
    logger = logging.getLogger("simvuefs.test_localio")
    warner = RateLimitedWarner(logger, interval=10.0)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        warner.warn("a %s", 1, key="a")
        warner.warn("b %s", 1, key="b")  # another key: warned although "a" just was
        warner.warn("a %s", 2, key="a")
        now[0] += 10.0
        warner.warn("a %s", 3, key="a")
        warner.warn("b %s", 2, key="b")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "a 1 (0 more since the last warning)"),
        (logging.WARNING, "b 1 (0 more since the last warning)"),
        (logging.DEBUG, "a 2"),
        (logging.WARNING, "a 3 (1 more since the last warning)"),
        (logging.WARNING, "b 2 (0 more since the last warning)"),
    ]

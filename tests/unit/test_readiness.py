"""The one-line readiness protocol (``control/readiness.py``) over real pipes."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

from simvuefs.control import readiness as readiness_module
from simvuefs.control.readiness import Readiness, failure, wait_for_line


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass  # closed by the code under test


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_ready_sends_one_line_and_closes_the_pipe(pipe):
    read_end, write_end = pipe
    readiness = Readiness(write_end)
    readiness.ready()
    assert not is_open(write_end)
    readiness.failed("too late", 3)  # at most one line: the rest is a no-op
    assert os.read(read_end, 100) == b"ready\n"
    assert os.read(read_end, 100) == b""  # EOF: the writer is closed


def test_failed_sends_the_exit_code_and_the_message_on_one_line(pipe):
    read_end, write_end = pipe
    Readiness(write_end).failed("cannot mount:\n  two\tlines", 2)
    line = wait_for_line(read_end, 5.0)
    assert line == "error 2 cannot mount: two lines"
    assert failure(line) == (2, "cannot mount: two lines")


def test_without_a_pipe_nothing_is_sent(monkeypatch):
    calls: list[tuple[str, tuple[object, ...]]] = []

    class RecordingOs:
        def write(self, *args: object) -> int:
            calls.append(("write", args))
            return 0

        def close(self, *args: object) -> None:
            calls.append(("close", args))

    monkeypatch.setattr(readiness_module, "os", RecordingOs())
    readiness = Readiness(None)
    readiness.ready()
    readiness.failed("x", 1)
    assert calls == []  # no line written, no descriptor closed


def test_a_parent_that_stopped_listening_does_not_stop_the_mount(pipe, caplog):
    read_end, write_end = pipe
    os.close(read_end)
    readiness = Readiness(write_end)
    with caplog.at_level(logging.DEBUG, logger="simvuefs.control.readiness"):
        readiness.ready()  # EPIPE is logged, not raised
    assert not is_open(write_end)
    assert "could not report to the parent" in caplog.text


def test_wait_for_line_times_out_with_none(pipe):
    read_end, _ = pipe
    assert wait_for_line(read_end, 0.1) is None


def test_wait_for_line_returns_what_came_before_eof(pipe):
    read_end, write_end = pipe
    os.write(write_end, b"rea")
    os.close(write_end)
    assert wait_for_line(read_end, 5.0) == "rea"


def test_wait_for_line_reads_a_line_written_in_pieces(pipe):
    read_end, write_end = pipe

    def write_slowly() -> None:
        for piece in (b"err", b"or 7 the ", b"reason\nignored\n"):
            os.write(write_end, piece)
            time.sleep(0.05)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        assert wait_for_line(read_end, 5.0) == "error 7 the reason"
    finally:
        writer.join()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ready", None),
        (None, None),
        ("", None),
        ("errors", None),
        ("error 2 bad option", (2, "bad option")),
        ("error 5", (5, "")),
        ("error x what", (1, "what")),  # a garbled code still means failure
    ],
)
def test_failure_parses_error_lines(line, expected):
    assert failure(line) == expected

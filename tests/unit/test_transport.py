"""Unit tests of simvuefs.backends.transport: error mapping, retries and bodies, with
httpx.MockTransport.

These cover what a real server cannot be made to do on demand; tests/server/test_client.py
and tests/server/test_storage_pool.py run the client against the real devserver.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import httpx
import pytest
import trio
from helpers import refuse_direct_open, settings_for

from simvuefs.backends import transport
from simvuefs.backends.transport import (
    Counters,
    MultipartFile,
    Reply,
    RetryPolicy,
    api_error,
    deadline,
    display_url,
    fetch,
    file_chunks,
    open_http,
    parse_json,
    s3_error,
    send,
    storage_error,
)
from simvuefs.errors import (
    AuthError,
    DeadlineExceeded,
    IntegrityError,
    NotFound,
    ProtocolError,
    ServerError,
    StatusError,
    TransportError,
    UploadRejected,
    UrlExpired,
)

SETTINGS = settings_for(retry_attempts=3)


def _reply(status: int, body: bytes) -> Reply:
    return Reply(status, httpx.Headers(), body, "GET http://api.test/api/runs/x")


def test_display_url_drops_the_query() -> None:
    url = "http://store.test/storage/blob?X-Signature=abc&expires=1#frag"
    assert display_url(url) == "http://store.test/storage/blob"


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, AuthError), (403, AuthError), (404, NotFound), (500, ServerError), (503, ServerError)],
)
def test_api_error_classes(status: int, kind: type[StatusError]) -> None:
    error = api_error(_reply(status, b'{"detail": "no such thing"}'))
    assert type(error) is kind
    assert error.status == status
    assert error.detail == "no such thing"
    assert "no such thing" in str(error)
    assert "GET http://api.test/api/runs/x" in str(error)


def test_api_error_other_status_and_validation_detail() -> None:
    body = b'{"detail": [{"loc": ["body", "name"], "msg": "field required", "type": "x"}]}'
    error = api_error(_reply(422, body))
    assert type(error) is StatusError
    assert error.detail == "field required"


def test_api_error_with_a_non_json_body_uses_the_text() -> None:
    error = api_error(_reply(418, b"<html>\n  teapot  </html>"))
    assert error.detail == "<html> teapot </html>"


def test_s3_error_parsing() -> None:
    body = (
        b'<?xml version="1.0"?><Error><Code>BadDigest</Code>'
        b"<Message>The SHA256 you specified did not match.</Message></Error>"
    )
    assert s3_error(body) == ("BadDigest", "The SHA256 you specified did not match.")
    assert s3_error(b"nothing here") == ("", "")


def test_storage_error_classes() -> None:
    what = "PUT http://store.test/up"
    bad_digest = b"<Error><Code>BadDigest</Code><Message>mismatch</Message></Error>"
    rejected = storage_error(400, bad_digest, what, upload=True)
    assert type(rejected) is UploadRejected
    assert "BadDigest: mismatch" in str(rejected)
    expired = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    assert type(storage_error(403, expired, what, upload=False)) is UrlExpired
    assert type(storage_error(403, b"", what, upload=True)) is UrlExpired
    assert type(storage_error(400, expired, what, upload=False)) is UrlExpired
    assert type(storage_error(413, b"", what, upload=True)) is UploadRejected
    assert type(storage_error(404, b"", what, upload=False)) is NotFound
    assert type(storage_error(500, b"", what, upload=True)) is ServerError
    assert type(storage_error(400, b"", what, upload=False)) is StatusError


def test_parse_json_raises_protocol_error() -> None:
    assert parse_json(b'{"a": 1}', "x") == {"a": 1}
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_json(b"{oops", "GET /api/runs")
    with pytest.raises(ProtocolError):
        parse_json(b"\xff\xfe", "GET /api/runs")
    with pytest.raises(ProtocolError):
        parse_json(b"[" * 100000, "GET /api/runs")


def test_backoff_is_bounded_with_jitter() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=2.0)
    assert 0.25 <= policy.backoff(0) < 0.5
    for retry in range(10):
        assert 0 < policy.backoff(retry) < 2.0


def _counting_transport(statuses: list[int]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = statuses[min(len(seen), len(statuses)) - 1]
        return httpx.Response(status, json={"n": len(seen)})

    return httpx.MockTransport(handler), seen


async def test_send_retries_503_then_succeeds() -> None:
    transport, seen = _counting_transport([503, 502, 200])
    counters = Counters()
    policy = RetryPolicy(attempts=4, base_delay=0.01)
    async with open_http(SETTINGS, transport) as http:
        reply = await fetch(http, lambda: http.build_request("GET", "http://s/x"), policy, counters)
    assert reply.status == 200
    assert parse_json(reply.body, "") == {"n": 3}
    assert (counters.requests, counters.retries) == (3, 2)


async def test_send_returns_the_last_retryable_answer() -> None:
    transport, seen = _counting_transport([503])
    policy = RetryPolicy(attempts=3, base_delay=0.01)
    async with open_http(SETTINGS, transport) as http:
        reply = await fetch(
            http, lambda: http.build_request("GET", "http://s/x"), policy, Counters()
        )
    assert reply.status == 503
    assert len(seen) == 3


async def test_send_does_not_retry_other_statuses() -> None:
    transport, seen = _counting_transport([500, 200])
    async with open_http(SETTINGS, transport) as http:
        reply = await fetch(
            http, lambda: http.build_request("GET", "http://s/x"), RetryPolicy(4), Counters()
        )
    assert reply.status == 500
    assert len(seen) == 1


async def test_send_stops_retrying_before_the_deadline() -> None:
    transport, seen = _counting_transport([503])
    policy = RetryPolicy(attempts=100, base_delay=1.0, max_delay=1.0)
    async with open_http(SETTINGS, transport) as http:
        with trio.move_on_after(2.5) as scope:
            reply = await fetch(
                http, lambda: http.build_request("GET", "http://s/x"), policy, Counters()
            )
    assert not scope.cancelled_caught
    assert reply.status == 503
    assert 2 <= len(seen) <= 6


async def test_connection_errors_are_retried_then_raised() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    policy = RetryPolicy(attempts=3, base_delay=0.01)
    async with open_http(SETTINGS, httpx.MockTransport(handler)) as http:
        with pytest.raises(TransportError, match="Connection refused") as info:
            await send(
                http, lambda: http.build_request("GET", "http://s/x?sig=1"), policy, Counters()
            )
    assert calls == 3
    assert "sig=1" not in str(info.value)
    assert not isinstance(info.value, DeadlineExceeded)


async def test_read_timeouts_become_deadline_exceeded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    policy = RetryPolicy(attempts=2, base_delay=0.01)
    async with open_http(SETTINGS, httpx.MockTransport(handler)) as http:
        with pytest.raises(DeadlineExceeded):
            await send(http, lambda: http.build_request("GET", "http://s/x"), policy, Counters())


async def test_deadline_converts_too_slow_error() -> None:
    with (
        pytest.raises(DeadlineExceeded, match="GET /x: no answer within 0.05 s"),
        deadline(0.05, "GET /x"),
    ):
        await trio.sleep(1)


async def test_file_chunks_streams_exact_size_and_detects_shrinking(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 3_000_000)
    counters = Counters()
    data = b"".join([chunk async for chunk in file_chunks(path, 2_500_000, counters)])
    assert data == b"a" * 2_500_000
    assert counters.bytes_uploaded == 2_500_000
    with pytest.raises(IntegrityError, match="shrank"):
        async for _ in file_chunks(path, 4_000_000, Counters()):
            pass


async def test_file_chunks_reads_the_next_chunk_while_the_current_one_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read of chunk 2 starts before the consumer asks for it, and the bytes are exact."""
    path = tmp_path / "f"
    content = bytes(range(256)) * (3 * 4096 + 100)  # 3 MiB + 25,600 bytes: 4 chunks
    path.write_bytes(content)
    started: list[int] = []
    second_started = threading.Event()
    real_read = transport.ChunkFile.read

    def read(self: transport.ChunkFile, offset: int, size: int) -> bytes:
        started.append(offset)
        if len(started) == 2:
            second_started.set()
        return real_read(self, offset, size)

    monkeypatch.setattr(transport.ChunkFile, "read", read)
    chunks = file_chunks(path, len(content), Counters())
    first = await chunks.__anext__()
    # Not asked for yet, chunk 2 is being read (or read) already.
    assert await trio.to_thread.run_sync(second_started.wait, 30)
    rest = [chunk async for chunk in chunks]
    assert first + b"".join(rest) == content
    mib = 1024 * 1024
    assert started == [0, mib, 2 * mib, 3 * mib]


def _record_advice(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Record every posix_fadvise call (offset, length, advice)."""
    advice: list[tuple[int, int, int]] = []
    real_fadvise = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, what: int) -> None:
        advice.append((offset, length, what))
        real_fadvise(fd, offset, length, what)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    return advice


async def test_file_chunks_reads_direct_without_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool's files are read direct (tmp_path's filesystem has O_DIRECT): nothing is
    cached, so nothing is dropped; the bytes, and an unaligned last chunk, are exact."""
    path = tmp_path / "f"
    content = os.urandom(2_500_001)
    path.write_bytes(content)
    advice = _record_advice(monkeypatch)
    chunks = [chunk async for chunk in file_chunks(path, len(content), Counters())]
    assert b"".join(chunks) == content
    assert [len(chunk) for chunk in chunks] == [1024 * 1024, 1024 * 1024, 402_849]
    assert advice == []


async def test_file_chunks_without_direct_reads_drop_each_chunk_from_the_page_cache_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"d" * 2_500_000)
    refuse_direct_open(monkeypatch)
    advice = _record_advice(monkeypatch)
    async for _ in file_chunks(path, 2_500_000, Counters()):
        pass
    mib = 1024 * 1024
    dropped = os.POSIX_FADV_DONTNEED
    assert advice == [(0, mib, dropped), (mib, mib, dropped), (2 * mib, 402_848, dropped)]


async def test_a_direct_read_refused_midway_goes_on_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    content = os.urandom(3 * 1024 * 1024)
    path.write_bytes(content)
    real_preadv = os.preadv
    calls: list[int] = []

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append(offset)
        if offset > 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(transport.os, "preadv", preadv)
    advice = _record_advice(monkeypatch)
    data = b"".join([chunk async for chunk in file_chunks(path, len(content), Counters())])
    assert data == content
    mib = 1024 * 1024
    assert calls == [0, mib]  # refused once, then never asked again
    assert [offset for offset, _, _ in advice] == [mib, 2 * mib]


async def test_file_chunks_closed_early_wait_for_the_read_ahead_and_close_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"e" * 4 * 1024 * 1024)
    reads: list[str] = []
    real_read = transport.ChunkFile.read
    real_close = transport.ChunkFile.close

    def read(self: transport.ChunkFile, offset: int, size: int) -> bytes:
        reads.append("start")
        chunk = real_read(self, offset, size)
        reads.append("end")
        return chunk

    def close(self: transport.ChunkFile) -> None:
        reads.append("close")
        real_close(self)

    monkeypatch.setattr(transport.ChunkFile, "read", read)
    monkeypatch.setattr(transport.ChunkFile, "close", close)
    chunks = file_chunks(path, 4 * 1024 * 1024, Counters())
    await chunks.__anext__()
    await chunks.aclose()
    # the read ahead ended before the file was closed
    assert reads == ["start", "end", "start", "end", "close"]


async def test_long_uploads_log_their_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "0123abcd"
    path.write_bytes(b"b" * 3 * 1024 * 1024)
    monkeypatch.setattr(transport, "PROGRESS_INTERVAL", 0.0)
    with caplog.at_level(logging.INFO, logger="simvuefs.backends.transport"):
        async for _ in file_chunks(path, 3 * 1024 * 1024, Counters(), "mesh/points.dat"):
            pass
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("uploading")]
    assert lines[0].startswith("uploading mesh/points.dat: 1.0 of 3.0 MiB (33%)")
    assert lines[-1].startswith("uploading mesh/points.dat: 3.0 of 3.0 MiB (100%)")


async def test_short_uploads_log_no_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"c" * 2 * 1024 * 1024)
    with caplog.at_level(logging.INFO, logger="simvuefs.backends.transport"):
        async for _ in file_chunks(path, 2 * 1024 * 1024, Counters()):
            pass
    assert not [r for r in caplog.records if r.getMessage().startswith("uploading")]


async def test_multipart_body_is_parseable_and_sized(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    content = bytes(range(256)) * 1000
    path.write_bytes(content)
    form = MultipartFile(
        (("key", "k1"), ("x-amz-checksum-sha256", "abc")), 'we"ird.bin', path, len(content)
    )
    body = b"".join([chunk async for chunk in form.chunks(Counters())])
    assert len(body) == form.length
    # Decode it with the standard library's parser to check the framing.
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + form.content_type.encode() + b"\r\n\r\n" + body
    )
    parts = list(message.iter_parts())
    assert [part.get_param("name", header="content-disposition") for part in parts] == [
        "key",
        "x-amz-checksum-sha256",
        "file",
    ]
    assert parts[2].get_filename() == "we%22ird.bin"
    payload = parts[2].get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload == content

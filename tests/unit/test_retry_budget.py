"""The client's retry budget, 429 and ``Retry-After``, on trio's mock clock (autojump): the
waits are checked exactly, without waiting.

A fake server (``httpx.MockTransport``) refuses connections for a while (a restart), answers
429 with ``Retry-After`` (seconds or an HTTP date) or 503. The same behaviour against the real
devserver and through a mount is ``tests/mount/test_outages.py``.
"""

from __future__ import annotations

import email.utils
import errno
import time
from collections.abc import Callable

import httpx
import pytest
import trio
import trio.testing
from helpers import settings_for

from simvuefs.backends.client import SimvueClient
from simvuefs.backends.transport import (
    Counters,
    Reply,
    RetryPolicy,
    api_error,
    fetch,
    open_http,
    retry_after,
    send,
    storage_error,
)
from simvuefs.errors import (
    RateLimited,
    ServerError,
    TransportError,
    UploadRejected,
    errno_for,
)

SETTINGS = settings_for()
URL = "http://api.test/api/runs"

Handler = Callable[[httpx.Request], httpx.Response]


def headers(value: str) -> httpx.Headers:
    return httpx.Headers({"Retry-After": value})


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after(headers("3")) == 3.0
    assert retry_after(headers(" 0.5 ")) == 0.5
    assert retry_after(headers("0")) == 0.0
    assert 118 < (retry_after(headers(http_date(120))) or 0) <= 121
    assert retry_after(headers(http_date(-60))) == 0.0  # a date in the past: now
    for unreadable in ("-1", "soon", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 -0000"):
        assert retry_after(headers(unreadable)) is None, unreadable
    assert retry_after(httpx.Headers()) is None


def test_429_maps_to_rate_limited_and_eagain_for_api_and_storage() -> None:
    reply = Reply(429, headers("7"), b'{"detail": "slow down"}', f"GET {URL}")
    error = api_error(reply)
    assert isinstance(error, RateLimited)
    assert error.retry_after == 7.0
    assert "slow down" in str(error)
    assert "asks to wait 7 s" in str(error)
    assert errno_for(error) == errno.EAGAIN
    upload = storage_error(429, b"<Error><Code>SlowDown</Code></Error>", "PUT x", upload=True)
    assert type(upload) is RateLimited  # never an UploadRejected: a 429 is not final
    assert not isinstance(upload, UploadRejected)
    download = storage_error(429, b"", "GET x", upload=False, headers=headers("2"))
    assert isinstance(download, RateLimited)
    assert download.retry_after == 2.0


def recorder(answer: Callable[[int, float], httpx.Response]) -> tuple[Handler, list[float]]:
    """A handler answering request number n (0-based) at trio time t with answer(n, t); the
    times of the requests are recorded."""
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        return answer(len(times) - 1, times[-1])

    return handler, times


async def get(handler: Handler, policy: RetryPolicy, seconds: float = 30.0) -> int:
    """Send one GET through fetch within *seconds*; return the final status."""
    async with open_http(SETTINGS, httpx.MockTransport(handler)) as http:
        with trio.fail_after(seconds):
            reply = await fetch(http, lambda: http.build_request("GET", URL), policy, Counters())
    return reply.status


async def test_429_waits_exactly_as_long_as_retry_after_says(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler, times = recorder(
        lambda n, _: (
            httpx.Response(429, headers={"Retry-After": "2"})
            if n < 2
            else httpx.Response(200, json={})
        )
    )
    assert await get(handler, RetryPolicy(attempts=8)) == 200
    assert [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)] == [2.0, 2.0]


async def test_429_with_an_http_date(autojump_clock: trio.testing.MockClock) -> None:
    handler, times = recorder(
        lambda n, _: (
            httpx.Response(429, headers={"Retry-After": http_date(3)})
            if n == 0
            else httpx.Response(200, json={})
        )
    )
    assert await get(handler, RetryPolicy(attempts=8)) == 200
    assert 1.9 < times[1] - times[0] <= 3.1  # whole seconds of the wall clock


async def test_429_without_retry_after_uses_our_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler, times = recorder(
        lambda n, _: httpx.Response(429) if n < 3 else httpx.Response(200, json={})
    )
    assert await get(handler, RetryPolicy(attempts=8, base_delay=1.0, max_delay=4.0)) == 200
    waits = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert [0.5 <= waits[0] < 1, 1 <= waits[1] < 2, 2 <= waits[2] < 4] == [True] * 3


async def test_retry_after_past_the_deadline_fails_at_once_and_holds_the_origin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler, times = recorder(lambda *_: httpx.Response(429, headers={"Retry-After": "20"}))
    policy = RetryPolicy(attempts=8)
    started = trio.current_time()
    assert await get(handler, policy, seconds=5.0) == 429  # the caller maps it: RateLimited
    assert trio.current_time() == started  # at once: no sleeping towards the deadline
    assert len(times) == 1
    # Other calls within the hold: failed at once without a request...
    async with open_http(SETTINGS, httpx.MockTransport(handler)) as http:
        with trio.fail_after(5.0), pytest.raises(RateLimited, match="Retry-After") as info:
            await send(http, lambda: http.build_request("GET", URL), policy, Counters())
    assert info.value.retry_after == pytest.approx(20.0)
    assert len(times) == 1
    # ...or, with a deadline long enough, sent once the hold is over.
    handler_ok, later = recorder(lambda *_: httpx.Response(200, json={}))
    assert await get(handler_ok, policy, seconds=30.0) == 200
    assert later == [pytest.approx(started + 20.0)]
    # Another origin is not held.
    async with open_http(SETTINGS, httpx.MockTransport(handler_ok)) as http:
        request = http.build_request("GET", "http://store.test/blob")
        await fetch(http, lambda: request, policy, Counters())
    assert len(later) == 2


async def test_a_503_retry_after_beyond_the_cap_ends_the_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler, times = recorder(lambda *_: httpx.Response(503, headers={"Retry-After": "3600"}))
    assert await get(handler, RetryPolicy(attempts=8, max_retry_after=60.0), 1e6) == 503
    assert len(times) == 1


def refusing_until(seconds: float) -> tuple[Handler, list[float]]:
    """A server that refuses connections for *seconds* of trio time from its first request
    (a restart), then answers an empty runs page."""
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if times[-1] - times[0] < seconds:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(200, json={"data": [], "count": 0})

    return handler, times


async def test_the_default_budget_outlasts_a_restart_of_a_few_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """8 attempts, waits 0.25 s doubling to 4 s with jitter: at least 7.9 s of waiting."""
    handler, times = refusing_until(7.5)
    async with SimvueClient.open(SETTINGS, transport=httpx.MockTransport(handler)) as client:
        assert await client.list_runs() == []
        assert client.statistics().retries == len(times) - 1
    assert SETTINGS.retry_attempts == 8
    assert times[-1] - times[0] >= 7.5


async def test_an_outage_longer_than_the_deadline_fails_within_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler, times = refusing_until(1e6)
    settings = settings_for(request_timeout=5.0)
    started = trio.current_time()
    async with SimvueClient.open(settings, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportError, match="Connection refused"):
            await client.list_runs()
    assert trio.current_time() - started < 5.0
    assert 2 <= len(times) <= 8


async def test_a_rate_limited_call_fails_with_rate_limited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Through the client: a 429 past the deadline is RateLimited (EAGAIN), a 503 after the
    attempts ServerError (EIO)."""

    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "120"}, json={"detail": "slow"})

    settings = settings_for(request_timeout=5.0)
    async with SimvueClient.open(settings, transport=httpx.MockTransport(limited)) as client:
        with pytest.raises(RateLimited) as info:
            await client.list_runs()
    assert info.value.status == 429
    assert errno_for(info.value) == errno.EAGAIN

    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "down"})

    async with SimvueClient.open(settings, transport=httpx.MockTransport(unavailable)) as client:
        with pytest.raises(ServerError):
            await client.list_runs()

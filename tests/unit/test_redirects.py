"""Redirects under SimvueClient (``backends/redirects.py``) against fake servers.

What needs ports 80 and 443 on one host (the usual proxy's http -> https upgrade, which
keeps the token) is shown here with ``httpx.MockTransport`` at ``http://api.test``; the
same behaviour against a real devserver and its redirecting front is in
``tests/server/test_redirect_front.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from helpers import FAKE_TOKEN, settings_for

from simvuefs.backends.client import SimvueClient
from simvuefs.backends.redirects import MAX_REDIRECTS, keeps_credentials, redirect_method
from simvuefs.errors import TransportError
from simvuefs.models import Artifact, UploadSlot

SETTINGS = settings_for(retry_attempts=1, request_timeout=5.0)
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.mark.parametrize(
    ("source", "target", "kept"),
    [
        ("http://h/api/x", "http://h/api/y", True),
        ("http://h/api/x", "http://h:80/api/x", True),
        ("http://h/api/x", "https://h/api/x", True),  # requests' upgrade exception
        ("http://h:80/api/x", "https://h:443/api/x", True),
        ("http://h:8080/api/x", "https://h:8443/api/x", False),
        ("http://h:8080/api/x", "https://h/api/x", False),
        ("http://h/api/x", "https://h:8443/api/x", False),
        ("https://h/api/x", "http://h/api/x", False),  # never down to plain text
        ("https://h/api/x", "https://other/api/x", False),
        ("https://h/api/x", "https://h:444/api/x", False),
        ("http://h/api/x", "http://h.evil/api/x", False),
    ],
)
def test_credentials_follow_as_requests_lets_them(source: str, target: str, kept: bool) -> None:
    assert keeps_credentials(httpx.URL(source), httpx.URL(target)) is kept


@pytest.mark.parametrize(
    ("method", "status", "after"),
    [
        ("GET", 301, "GET"),
        ("POST", 301, "GET"),
        ("PUT", 301, "PUT"),
        ("POST", 302, "GET"),
        ("PUT", 303, "GET"),
        ("HEAD", 303, "HEAD"),
        ("POST", 307, "POST"),
        ("POST", 308, "POST"),
    ],
)
def test_methods_change_as_in_requests(method: str, status: int, after: str) -> None:
    assert redirect_method(method, status) == after


def _upgrading(seen: list[httpx.Request], status: int = 308) -> Handler:
    """http://api.test redirects everything to https://api.test, which answers."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.scheme == "http":
            return httpx.Response(
                status, headers={"Location": str(request.url.copy_with(scheme="https"))}
            )
        if request.url.path == "/api/version":
            return httpx.Response(200, json={"version": "1.3.0"})
        if request.url.path == "/api/artifacts" and request.method == "POST":
            return httpx.Response(
                200, json={"id": "a1", "url": None, "echo": request.content.decode()}
            )
        return httpx.Response(200, json={})

    return handler


async def test_the_usual_upgrade_is_followed_with_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[httpx.Request] = []
    caplog.set_level(logging.WARNING, "simvuefs.backends.redirects")
    async with SimvueClient.open(
        SETTINGS, transport=httpx.MockTransport(_upgrading(seen))
    ) as client:
        assert await client.server_version() == "1.3.0"
        slot = await client.create_artifact(
            name="n", original_path="/x", size=1, mime_type="a/b", checksum="c"
        )
        await client.server_version()
    assert slot.artifact_id == "a1"
    assert [(r.method, str(r.url)) for r in seen] == [
        ("GET", "http://api.test/api/version"),
        ("GET", "https://api.test/api/version"),
        ("POST", "http://api.test/api/artifacts"),
        ("POST", "https://api.test/api/artifacts"),  # 308 keeps the method and the body
        ("GET", "http://api.test/api/version"),
        ("GET", "https://api.test/api/version"),
    ]
    assert all(r.headers["Authorization"] == f"Bearer {FAKE_TOKEN}" for r in seen)
    assert all(r.headers["Host"] == "api.test" for r in seen)
    assert json.loads(seen[3].content)["name"] == "n"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # once per pair of origins
    assert "use https://api.test in place of http://api.test in the server URL" in warnings[0]


async def test_a_post_turned_into_a_get_is_refused() -> None:
    seen: list[httpx.Request] = []
    async with SimvueClient.open(
        SETTINGS, transport=httpx.MockTransport(_upgrading(seen, status=301))
    ) as client:
        assert await client.server_version() == "1.3.0"  # a GET follows a 301
        with pytest.raises(TransportError) as caught:
            await client.create_artifact(
                name="n", original_path="/x", size=1, mime_type="a/b", checksum="c"
            )
    message = str(caught.value)
    assert message.startswith(
        "POST http://api.test/api/artifacts: redirected (301) to https://api.test/api/artifacts,"
    )
    assert "would turn it into a GET" in message
    assert "use https://api.test in place of http://api.test" in message
    assert [r.method for r in seen] == ["GET", "GET", "POST"]  # no GET sent for the POST


async def test_the_token_never_goes_to_another_origin() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(308, headers={"Location": "https://elsewhere.test:8443/api/version"})

    async with SimvueClient.open(SETTINGS, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportError) as caught:
            await client.server_version()
    message = str(caught.value)
    assert [str(r.url) for r in seen] == ["http://api.test/api/version"]
    assert "another origin, where simvuefs does not send the token" in message
    assert "use https://elsewhere.test:8443 in place of http://api.test" in message
    assert FAKE_TOKEN not in message
    assert "\n" not in message


async def test_storage_redirects_are_followed_anywhere() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "store.test":
            return httpx.Response(302, headers={"Location": "https://cdn.test/blob?sig=2"})
        body = httpx.ByteStream(b"data")  # streamed: MockTransport reads other bodies at once
        return httpx.Response(206, headers={"Content-Range": "bytes 0-3/4"}, stream=body)

    artifact = Artifact(id="a1", name="n", url="http://store.test/blob?sig=1")
    async with SimvueClient.open(SETTINGS, transport=httpx.MockTransport(handler)) as client:
        assert await client.read_range(artifact, 0, 4) == b"data"
    assert [r.url.host for r in seen] == ["store.test", "cdn.test"]
    assert all("Authorization" not in r.headers for r in seen)


async def test_a_streamed_upload_is_not_sent_twice(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(307, headers={"Location": "https://store.test/other"})

    local = tmp_path / "f.bin"
    local.write_bytes(b"x" * 10)
    async with SimvueClient.open(SETTINGS, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(Exception, match="status 307"):
            await client.upload_content(UploadSlot("a1", "http://store.test/up"), local, 10, "f")
    assert len(seen) == 1


async def test_redirect_loops_end() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": f"/api/version?hop={len(seen)}"})

    async with SimvueClient.open(SETTINGS, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportError, match=f"more than {MAX_REDIRECTS} redirects"):
            await client.server_version()
    assert len(seen) == MAX_REDIRECTS + 1


async def test_a_redirect_to_a_non_http_url_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "ftp://api.test/api/version"})

    async with SimvueClient.open(SETTINGS, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportError, match="not an http"):
            await client.server_version()

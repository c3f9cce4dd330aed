"""Tests of SimvueClient.

Most run against the real devserver over HTTP (``devserver`` fixture); a few use
``httpx.MockTransport`` for what a real server cannot show: the headers storage receives, and
malformed answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from simvuefs.client import SimvueClient
from simvuefs.config import Settings
from simvuefs.errors import AuthError, NotFound, ProtocolError
from simvuefs.models import Artifact, UploadSlot

API = "http://api.test/api"
TOKEN = "secret-token"
MOCK_SETTINGS = Settings(url=API, token=TOKEN, retry_attempts=2, request_timeout=5.0)

Handler = Callable[[httpx.Request], httpx.Response]


def _mock(handler: Handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


class _Body(httpx.AsyncByteStream):
    """A response body that arrives over the "network" (MockTransport pre-reads bytes)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield self._content


# -- MockTransport tests -------------------------------------------------------------------


async def test_token_goes_to_the_api_only(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    content = b"0123456789" * 10

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/api/artifacts" and request.method == "POST":
            return httpx.Response(200, json={"id": "a1", "url": "http://store.test/up?sig=s"})
        if path == "/api/artifacts/a1" and request.method == "GET":
            return httpx.Response(200, json={"id": "a1", "name": "n", "url": "/store/dl?sig=2"})
        if path.startswith("/store"):
            if request.method == "GET":
                return httpx.Response(
                    206, headers={"Content-Range": "bytes 0-9/100"}, stream=_Body(content[:10])
                )
            return httpx.Response(200)
        return httpx.Response(200, json={})

    local = tmp_path / "f.bin"
    local.write_bytes(content)
    async with SimvueClient.open(MOCK_SETTINGS, transport=_mock(handler)) as client:
        slot = await client.create_artifact(
            name="n", original_path="/x", size=100, mime_type="a/b", checksum="c"
        )
        await client.upload_content(
            UploadSlot(slot.artifact_id, "http://api.test/store/up?sig=s"), local, 100, "f.bin"
        )
        artifact = Artifact(id="a1", name="n", url="http://api.test/store/dl?sig=1")
        assert await client.read_range(artifact, 0, 10) == content[:10]
        await client.get_artifact_name("a1")
    api = [r for r in seen if r.url.path.startswith("/api/")]
    storage = [r for r in seen if not r.url.path.startswith("/api/")]
    assert len(api) == 2
    assert len(storage) == 2
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in api)
    assert all("Authorization" not in r.headers for r in storage)
    assert all(r.headers["User-Agent"].startswith("simvuefs/") for r in seen)
    put = next(r for r in storage if r.method == "PUT")
    assert "Content-Type" not in put.headers
    assert put.headers["Content-Length"] == "100"
    get = next(r for r in storage if r.method == "GET")
    assert get.headers["Range"] == "bytes=0-9"
    assert get.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"data": "nope"}', b'"text"'],
)
async def test_malformed_listing_raises_protocol_error(body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    async with SimvueClient.open(MOCK_SETTINGS, transport=_mock(handler)) as client:
        with pytest.raises(ProtocolError):
            await client.list_runs()


async def test_malformed_entries_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    entries = [
        {"id": "r1", "name": "good"},
        {"name": "no id"},
        "not an object",
        {"id": "r2", "name": "also good"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/runs":
            start = int(request.url.params["start"])
            return httpx.Response(200, json={"data": entries if start == 0 else [], "count": 4})
        return httpx.Response(200, json=[{"id": "a1", "name": "x"}, {"id": 5}])

    async with SimvueClient.open(MOCK_SETTINGS, transport=_mock(handler)) as client:
        runs = await client.list_runs()
        artifacts = await client.list_artifacts("r1", category="input")
    assert [run.name for run in runs] == ["good", "also good"]
    assert [(a.id, a.category) for a in artifacts] == [("a1", "input")]
    assert "skipping a malformed entry" in caplog.text


async def test_wrong_json_types_raise_protocol_error() -> None:
    answers = {
        "/api/version": {"version": 3},
        "/api/runs/r1": ["a list"],
        "/api/artifacts/a1": {"id": "a1", "name": ""},
        "/api/runs/r1/artifacts": {"not": "a list"},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(answers[request.url.path]).encode())

    async with SimvueClient.open(MOCK_SETTINGS, transport=_mock(handler)) as client:
        with pytest.raises(ProtocolError, match="no version"):
            await client.server_version()
        with pytest.raises(ProtocolError, match="expected a JSON dict"):
            await client.get_run("r1")
        with pytest.raises(ProtocolError, match="no name"):
            await client.get_artifact_name("a1")
        with pytest.raises(ProtocolError, match="expected a JSON list"):
            await client.list_artifacts("r1")


async def test_server_version_checks_token_and_major_version() -> None:
    answers = iter(
        [
            httpx.Response(401, json={"detail": "Not authenticated"}),
            httpx.Response(200, json={"version": "2.0.1"}),
            httpx.Response(200, json={"version": "1.3.0"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    async with SimvueClient.open(MOCK_SETTINGS, transport=_mock(handler)) as client:
        with pytest.raises(AuthError, match="the server rejected the token"):
            await client.server_version()
        with pytest.raises(ProtocolError, match="not supported"):
            await client.server_version()
        assert await client.server_version() == "1.3.0"


async def test_ids_are_quoted_in_paths() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"detail": "Not Found"})

    async with SimvueClient.open(MOCK_SETTINGS, transport=_mock(handler)) as client:
        with pytest.raises(NotFound, match="Not Found"):
            await client.get_run("../admin?x")
    assert seen == ["/api/runs/..%2Fadmin%3Fx"]

"""SimvueClient against fake APIs (``httpx.MockTransport``): what a real server cannot show.

The headers storage receives (never the token), malformed and wrongly typed answers, quoted
ids, and a refused token looked up again (the token goes to the API only: also a security
property, see tests/mount/test_security.py). No server, no mount; the client against the real
devserver is ``tests/server/test_client.py``.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio
from helpers import FAKE_TOKEN, settings_for

from simvuefs.backends import client as client_module
from simvuefs.backends.client import SimvueClient
from simvuefs.errors import AuthError, NotFound, ProtocolError, UrlExpired, errno_for
from simvuefs.models import Artifact, UploadSlot

MOCK_SETTINGS = settings_for(retry_attempts=2, request_timeout=5.0)

Handler = Callable[[httpx.Request], httpx.Response]


def _mock(handler: Handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


class _Body(httpx.AsyncByteStream):
    """A response body that arrives over the "network" (MockTransport pre-reads bytes)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._content


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
        form = UploadSlot(slot.artifact_id, "http://api.test/store/post", (("key", "k"),))
        await client.upload_content(form, local, 100, "f.bin")
        artifact = Artifact(id="a1", name="n", url="http://api.test/store/dl?sig=1")
        assert await client.read_range(artifact, 0, 10) == content[:10]
        assert (await client.get_artifact("a1")).name == "n"
    api = [r for r in seen if r.url.path.startswith("/api/")]
    storage = [r for r in seen if not r.url.path.startswith("/api/")]
    assert len(api) == 2
    assert len(storage) == 3
    assert all(r.headers["Authorization"] == f"Bearer {FAKE_TOKEN}" for r in api)
    assert all("Authorization" not in r.headers for r in storage)
    assert all(r.headers["User-Agent"].startswith("simvuefs/") for r in seen)
    put = next(r for r in storage if r.method == "PUT")
    assert "Content-Type" not in put.headers
    assert put.headers["Content-Length"] == "100"
    post = next(r for r in storage if r.method == "POST")
    assert post.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="key"' in post.read()
    get = next(r for r in storage if r.method == "GET")
    assert get.headers["Range"] == "bytes=0-9"
    assert get.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize(
    ("status", "headers", "url", "error"),
    [
        (206, {"Content-Range": "bytes 5-9/100"}, "http://api.test/s", ProtocolError),
        (206, {"Content-Range": "pages 0-9/100"}, "http://api.test/s", ProtocolError),
        (206, {"Content-Range": "bytes 0-9/100"}, "http://[::1:bad/s?sig=1", ProtocolError),
        (403, {}, "http://api.test/s", UrlExpired),
    ],
)
async def test_bad_storage_answers(
    status: int, headers: dict[str, str], url: str, error: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/"):
            return httpx.Response(200, json={"id": "a", "name": "n", "url": url})
        return httpx.Response(status, headers=headers, stream=_Body(b"0123456789"))

    artifact = Artifact(id="a", name="n", url=url)
    async with SimvueClient.open(MOCK_SETTINGS, transport=_mock(handler)) as client:
        with pytest.raises(error) as info:
            await client.read_range(artifact, 0, 10)
    assert "sig=" not in str(info.value)


async def test_a_download_url_is_resolved_once_and_anew_when_refreshed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every part of a file is a GET of the same URL: it is resolved (joined to the API base
    and parsed) once, not per part; a refreshed URL is resolved once too, and used."""
    resolved: list[str] = []
    real = client_module.resolve_url

    def counting(base: str, url: str) -> httpx.URL:
        resolved.append(url)
        return real(base, url)

    monkeypatch.setattr(client_module, "resolve_url", counting)
    gets: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/"):
            return httpx.Response(200, json={"id": "a", "name": "n", "url": "/store/new?sig=2"})
        gets.append(str(request.url))
        if request.url.path == "/store/old":
            return httpx.Response(403, content=b"<Code>ExpiredToken</Code>")
        first = int(request.headers["Range"].removeprefix("bytes=").split("-")[0])
        return httpx.Response(
            206, headers={"Content-Range": f"bytes {first}-{first + 1}/10"}, stream=_Body(b"xy")
        )

    artifact = Artifact(id="a", name="n", url="/store/dl?sig=1")
    async with SimvueClient.open(MOCK_SETTINGS, transport=_mock(handler)) as client:
        for start in (0, 2, 4):
            assert await client.read_range(artifact, start, 2) == b"xy"
        assert resolved == ["/store/dl?sig=1"]
        assert gets == ["http://api.test/store/dl?sig=1"] * 3
        expired = Artifact(id="a", name="n", url="/store/old?sig=1")
        for start in (0, 2):
            assert await client.read_range(expired, start, 2) == b"xy"
    assert resolved == ["/store/dl?sig=1", "/store/old?sig=1", "/store/new?sig=2"]
    new = "http://api.test/store/new?sig=2"
    assert gets[3:] == ["http://api.test/store/old?sig=1", new, new]


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
    warnings = [r for r in caplog.records if "skipped a malformed entry" in r.getMessage()]
    assert len(warnings) == 1  # three skipped entries, one warning (rate-limited)


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
        with pytest.raises(ProtocolError, match="without a usable 'name'"):
            await client.get_artifact("a1")
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


# -- a refused token ----------------------------------------------------------------------------


class TokenApi:
    """An API that accepts only ``valid`` as the bearer token; counts what it saw."""

    def __init__(self, valid: str) -> None:
        self.valid = valid
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        self.seen.append(token)
        if token != self.valid:
            return httpx.Response(401, json={"detail": f"token has expired: {token}"})
        return httpx.Response(200, json={"data": [], "count": 0})


async def test_a_refused_token_is_looked_up_again_and_the_request_repeated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = TokenApi("old-token")
    found = ["old-token"]
    settings = settings_for(token="old-token", token_reload=lambda: found[0])
    async with SimvueClient.open(settings, transport=httpx.MockTransport(api)) as client:
        assert await client.list_runs() == []
        api.valid, found[0] = "new-token", "new-token"
        assert await client.list_runs() == []  # refused once, reloaded, repeated
        assert api.seen == ["old-token", "old-token", "new-token"]
        # Refused again with no new token in sight: EACCES, one clear error, no token in it.
        api.valid = "newest-token"
        await trio.sleep(client_module.TOKEN_RELOAD_INTERVAL)
        with pytest.raises(AuthError) as caught:
            await client.list_runs()
        assert errno_for(caught.value) == errno.EACCES
        with pytest.raises(AuthError):
            await client.list_runs()  # within the interval: no second reload, no second error
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "refuses the token (token has expired: <token>)" in errors[0]
    assert all("-token" not in r.getMessage() for r in caplog.records)


async def test_concurrent_refusals_cost_one_reload() -> None:
    api = TokenApi("second")
    reloads = 0
    outcomes: list[str] = []

    def reload() -> str:
        nonlocal reloads
        reloads += 1
        return "second"

    settings = settings_for(token="first", token_reload=reload)
    async with SimvueClient.open(settings, transport=httpx.MockTransport(api)) as client:

        async def list_runs() -> None:
            try:
                await client.list_runs()
            except AuthError:
                outcomes.append("refused")
            else:
                outcomes.append("ok")

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(list_runs)
    assert outcomes == ["ok"] * 10
    assert reloads == 1
    assert api.seen.count("second") == 10

"""Proxies from the environment (``HTTP_PROXY``, ``NO_PROXY``), which simvuefs's network
(``backends/tls.py``) takes as ``requests`` does, since httpx's own environment handling is
off: a recording HTTP proxy in a thread stands in for a site's proxy.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from helpers import FAKE_TOKEN, settings_for

from simvuefs.backends.client import SimvueClient
from simvuefs.errors import TransportError

API = "http://simvue.invalid/api"  # .invalid never resolves: only a proxy can reach it


class _Proxy(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization", "")))
        body = json.dumps({"version": "1.3.0"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    _Proxy.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_requests_go_through_the_environments_proxy(
    proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with SimvueClient.open(settings_for(url=API)) as client:
        assert await client.server_version() == "1.3.0"
    assert _Proxy.seen == [(f"{API}/version", f"Bearer {FAKE_TOKEN}")]


async def test_no_proxy_bypasses_it(proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "simvue.invalid")
    settings = settings_for(url=API, retry_attempts=1, request_timeout=5)
    async with SimvueClient.open(settings) as client:
        with pytest.raises(TransportError):
            await client.server_version()
    assert _Proxy.seen == []

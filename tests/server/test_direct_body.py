"""Tests of downloads whose body is read straight from the connection (transport.DirectBody).

Large plain HTTP/1.1 bodies skip h11 after their first chunk; these tests check, against the
real devserver, that the bytes are the same, that broken, stalled and Range-ignoring answers
are handled as on the httpx path, and that the connection, out of step with h11 afterwards,
is never reused. That a fake transport (``httpx.MockTransport``) keeps the httpx path is
checked in ``tests/unit/test_transport.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from devserver_util import SEEDED_LARGE_SIZE
from helpers import settings_for

from simvuefs.backends.client import RangeStream, SimvueClient
from simvuefs.backends.transport import DIRECT_BODY_MIN, DirectBody, resolve_url
from simvuefs.config import MIB
from simvuefs.devserver import seed
from simvuefs.errors import DeadlineExceeded, TransportError
from simvuefs.models import Artifact
from testbed.devserver import DevServer


@asynccontextmanager
async def _large(
    server: DevServer, **overrides: Any
) -> AsyncIterator[tuple[SimvueClient, Artifact]]:
    settings = settings_for(server, **overrides)
    async with SimvueClient.open(settings) as client:
        (large,) = await client.list_artifacts(server.run_ids("demo run")[0], name="large.bin")
        yield client, large


async def _receive_all(body: RangeStream, piece: int = MIB) -> bytes:
    parts = []
    while chunk := await body.receive(piece):
        assert len(chunk) <= piece
        parts.append(chunk)
    return b"".join(parts)


async def test_a_large_body_comes_straight_from_the_connection(
    seeded_devserver: DevServer,
) -> None:
    server = seeded_devserver
    async with _large(server) as (client, large):
        digest = hashlib.sha256()
        async with client.open_range(large, 0) as body:
            assert not body.direct  # h11's first chunk comes first
            while chunk := await body.receive(MIB):
                digest.update(chunk)
            assert body.direct
        assert digest.hexdigest() == large.checksum
        offset = 3 * MIB + 5
        async with client.open_range(large, offset, offset + 20 * MIB - 1) as body:
            received = await _receive_all(body, 300_000)  # not a multiple of socket reads
            assert body.direct
        assert received == seed.large_content(offset, 20 * MIB)
        # A small range keeps the httpx path (and its connection).
        async with client.open_range(large, 7, 7 + DIRECT_BODY_MIN // 2) as body:
            assert await _receive_all(body) == seed.large_content(7, DIRECT_BODY_MIN // 2 + 1)
            assert not body.direct


async def test_the_connection_of_a_direct_body_is_not_reused(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    settings = settings_for(server)
    async with SimvueClient.open(settings) as client:
        (large,) = await client.list_artifacts(server.run_ids("demo run")[0], name="large.bin")
    assert large.url is not None
    url = resolve_url(server.api_url, large.url)
    async with httpx.AsyncClient() as http:
        streams = []
        for _ in range(2):
            async with http.stream("GET", url, headers={"Range": "bytes=0-"}) as response:
                chunks = response.aiter_raw()  # referenced: collecting it closes the response
                first = await anext(chunks)
                direct = DirectBody.attach(response, len(first))
                assert direct is not None
                streams.append(response.extensions["network_stream"])
                received = len(first)
                while chunk := await direct.read(4 * MIB):
                    received += len(chunk)
                assert received == SEEDED_LARGE_SIZE
                assert await direct.read(MIB) == b""
        assert streams[0] is not streams[1]  # the first connection was closed, not pooled
        answer = await http.get(url, headers={"Range": "bytes=0-9"})
        assert answer.content == seed.large_content(0, 10)


async def test_a_broken_direct_body_resumes(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _large(server) as (client, large):
        server.set_faults(drop_after_bytes=6 * MIB + 3)
        assert await client.read_range(large, 100, 16 * MIB) == seed.large_content(100, 16 * MIB)
        assert client.statistics().retries >= 2
        async with client.open_range(large, 0) as body:
            with pytest.raises(TransportError, match="before the body's end"):
                await _receive_all(body)
            assert body.direct


async def test_a_stalled_direct_body_hits_the_read_timeout(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _large(server, read_timeout=0.5) as (client, large):
        server.set_faults(stall_seconds=10.0, stall_where="storage_middle")
        async with client.open_range(large, 0) as body:
            # The stall ends long before the 30 s request deadline: only the read timeout
            # can end the body early.
            with pytest.raises(DeadlineExceeded):
                await _receive_all(body)
            assert body.direct


async def test_a_range_ignoring_server_is_skipped_on_the_direct_path(
    seeded_devserver: DevServer,
) -> None:
    server = seeded_devserver
    async with _large(server) as (client, large):
        server.set_faults(ignore_range=True)
        offset = 5 * MIB + 1
        assert await client.read_range(large, offset, 10 * MIB) == seed.large_content(
            offset, 10 * MIB
        )
        async with client.open_range(large, offset) as body:
            assert body.status == 200
            received = await _receive_all(body, 3 * MIB)
            assert body.direct
        assert received == seed.large_content(offset, SEEDED_LARGE_SIZE - offset)

"""Tests of GETs on kept-alive connections (backends/storagepool.py): storage ranges, listings.

Against the real devserver: the bytes are right, a run of large ranged GETs uses one
connection (``connections_opened``), a body not read to its end costs its connection, and
broken, stalled and Range-ignoring answers are handled as on the httpx path. Against a
bare HTTP/1.1 server on 127.0.0.1 that closes every connection after one answer: a pooled
connection the server closed while idle is replaced once, transparently. HTTPS storage with
its own CA and a refused certificate: tests/server/test_tls.py.
"""

from __future__ import annotations

import functools
import hashlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from devserver_util import SEEDED_LARGE_SIZE
from helpers import settings_for

from simvuefs.backends.client import RangeStream, SimvueClient
from simvuefs.backends.storagepool import BODY_EXTENSION, StorageBody, StoragePool
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


async def _fill_all(body: RangeStream, block: int = MIB) -> bytes:
    """The rest of *body*, read block by block with ``readinto`` (the read-ahead's way)."""
    parts = []
    while True:
        buffer = bytearray(block)
        got = await body.readinto(memoryview(buffer))
        parts.append(bytes(buffer[:got]))
        if got < block:
            return b"".join(parts)


def _opened(client: SimvueClient) -> int:
    return client.statistics().connections_opened


async def _probe(client: SimvueClient, large: Artifact) -> int:
    """Read 10 bytes of *large* through the pool (checked); return the connections opened
    so far."""
    assert await client.read_range(large, 0, 10) == seed.large_content(0, 10)
    return _opened(client)


async def test_large_ranges_in_a_row_share_one_connection(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _large(server) as (client, large):
        # The devserver serves storage on the API's origin: the connection of the listing
        # (a GET through the pool as well) serves every range after it.
        before = _opened(client)
        for part in range(4):
            start = part * 8 * MIB + 3
            assert await client.read_range(large, start, 8 * MIB) == seed.large_content(
                start, 8 * MIB
            )
        small = await client.read_range(large, 7, 4096)  # a random read takes it too
        assert small == seed.large_content(7, 4096)
        assert _opened(client) == before
        digest = hashlib.sha256()
        async with client.open_range(large, 0) as body:
            while chunk := await body.receive(MIB):
                digest.update(chunk)
        assert digest.hexdigest() == large.checksum
        offset = 3 * MIB + 5
        async with client.open_range(large, offset, offset + 20 * MIB - 1) as body:
            received = await _receive_all(body, 300_000)  # not a multiple of socket reads
        assert received == seed.large_content(offset, 20 * MIB)
        # The size probe (bytes 0-0, body never read) keeps its connection too.
        assert await client.content_length(large) == large.size
        assert _opened(client) == before


async def test_a_body_not_read_to_its_end_costs_its_connection(
    seeded_devserver: DevServer,
) -> None:
    server = seeded_devserver
    async with _large(server) as (client, large):
        before = await _probe(client, large)
        async with client.open_range(large, 0, 16 * MIB - 1) as body:
            chunk = await body.receive(MIB)
            assert chunk == seed.large_content(0, len(chunk))
        assert _opened(client) == before  # the pooled connection served it
        assert await _probe(client, large) == before + 1  # but was closed, not pooled again


async def test_a_broken_body_resumes_and_a_short_one_fails(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _large(server) as (client, large):
        server.set_faults(drop_after_bytes=6 * MIB + 3)
        assert await client.read_range(large, 100, 16 * MIB) == seed.large_content(100, 16 * MIB)
        assert client.statistics().retries >= 2
        async with client.open_range(large, 0) as body:
            with pytest.raises(TransportError, match="before the body's end"):
                await _receive_all(body)


async def test_a_stalled_body_hits_the_read_timeout(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _large(server, read_timeout=0.5) as (client, large):
        server.set_faults(stall_seconds=10.0, stall_where="storage_middle")
        async with client.open_range(large, 0) as body:
            # The stall ends long before the 30 s request deadline: only the read timeout
            # can end the body early.
            with pytest.raises(DeadlineExceeded):
                await _receive_all(body)


async def test_a_range_ignoring_server_is_skipped(seeded_devserver: DevServer) -> None:
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
        assert received == seed.large_content(offset, SEEDED_LARGE_SIZE - offset)


async def test_ranges_filled_block_by_block_are_right_and_keep_their_connection(
    seeded_devserver: DevServer,
) -> None:
    server = seeded_devserver
    async with _large(server) as (client, large):
        before = await _probe(client, large)
        downloaded = client.statistics().bytes_downloaded
        offset = 3 * MIB + 5
        async with client.open_range(large, offset, offset + 20 * MIB - 1) as body:
            # Blocks that are not multiples of socket reads; the last one is short.
            received = await _fill_all(body, 300_000)
            assert await body.readinto(memoryview(bytearray(10))) == 0
            assert await body.receive(10) == b""
        assert received == seed.large_content(offset, 20 * MIB)
        assert client.statistics().bytes_downloaded - downloaded == 20 * MIB
        async with client.open_range(large, 7, 7 + 2 * MIB - 1) as body:
            head = await body.receive(1000)  # receive, then readinto, on one body
            rest = await _fill_all(body, MIB)
        assert head + rest == seed.large_content(7, 2 * MIB)
        assert await _probe(client, large) == before  # every body was read to its end: kept


async def test_a_filled_body_that_breaks_or_stalls_fails_as_a_received_one(
    seeded_devserver: DevServer,
) -> None:
    server = seeded_devserver
    async with _large(server, read_timeout=0.5) as (client, large):
        server.set_faults(drop_after_bytes=6 * MIB + 3)
        async with client.open_range(large, 0) as body:
            with pytest.raises(TransportError, match="before the body's end"):
                await _fill_all(body)
        server.set_faults(drop_after_bytes=0, stall_seconds=10.0, stall_where="storage_middle")
        async with client.open_range(large, 0) as body:
            with pytest.raises(DeadlineExceeded):
                await _fill_all(body)


async def test_a_range_ignoring_server_is_skipped_when_filled(
    seeded_devserver: DevServer,
) -> None:
    server = seeded_devserver
    async with _large(server) as (client, large):
        server.set_faults(ignore_range=True)
        offset = 5 * MIB + 1
        async with client.open_range(large, offset, offset + 3 * MIB - 1) as body:
            assert body.status == 200
            received = await _fill_all(body, MIB)
        assert received == seed.large_content(offset, 3 * MIB)


class _OneAnswerServer:
    """HTTP/1.1 on 127.0.0.1 answering each connection's first request with 206 and
    *body*, then closing it without saying so (no ``Connection: close``)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.connections = 0
        self.port = 0

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(65536)
            if not data:
                return
            head += data
        size = len(self.body)
        await stream.send_all(
            b"HTTP/1.1 206 Partial Content\r\n"
            + f"Content-Length: {size}\r\nContent-Range: bytes 0-{size - 1}/{size}\r\n\r\n".encode()
            + self.body
        )
        await stream.aclose()

    async def start(self, nursery: trio.Nursery) -> None:
        serve = functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        self.port = listener.socket.getsockname()[1]


class _ChunkedServer:
    """HTTP/1.1 on 127.0.0.1 answering every request of a connection with 200 and *body*
    in chunks of *chunk* bytes (``Transfer-Encoding: chunked``), keeping the connection."""

    def __init__(self, body: bytes, chunk: int) -> None:
        self.body = body
        self.chunk = chunk
        self.connections = 0
        self.port = 0

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        received = b""
        while True:
            while b"\r\n\r\n" not in received:
                data = await stream.receive_some(65536)
                if not data:
                    return
                received += data
            received = received.partition(b"\r\n\r\n")[2]
            chunks = [self.body[i : i + self.chunk] for i in range(0, len(self.body), self.chunk)]
            framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
            )

    async def start(self, nursery: trio.Nursery) -> None:
        serve = functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        self.port = listener.socket.getsockname()[1]


async def _get(
    pool: StoragePool, port: int, headers: dict[str, str] | None = None, *, fill: bool = False
) -> bytes:
    request = httpx.Request(
        "GET",
        f"http://127.0.0.1:{port}/blob",
        headers={"Range": "bytes=0-"} if headers is None else headers,
        extensions={"timeout": {"connect": 5.0, "read": 5.0, "write": 5.0}},
    )
    response = await pool.handle(request, ssl.create_default_context())
    try:
        body = response.extensions[BODY_EXTENSION]
        assert isinstance(body, StorageBody)
        parts = []
        if fill:  # 100 KB blocks: the first one partly from the bytes h11 buffered
            while True:
                buffer = bytearray(100_000)
                got = await body.readinto(memoryview(buffer))
                parts.append(bytes(buffer[:got]))
                if got < len(buffer):
                    break
        else:
            while chunk := await body.receive(MIB):
                parts.append(chunk)
        return b"".join(parts)
    finally:
        await response.aclose()


async def test_a_connection_closed_while_idle_is_replaced_once() -> None:
    content = bytes(range(256)) * 20_000  # 5 MB: most of it read straight from the socket
    server = _OneAnswerServer(content)
    opened = []
    pool = StoragePool(lambda: opened.append(1))
    async with trio.open_nursery() as nursery:
        await server.start(nursery)
        try:
            assert await _get(pool, server.port) == content
            assert (len(opened), server.connections) == (1, 1)
            # The pooled connection is gone at the server: the request goes out on it, meets
            # its end before any answer, and is sent again on a new connection.
            assert await _get(pool, server.port) == content
            assert (len(opened), server.connections) == (2, 2)
            assert await _get(pool, server.port, fill=True) == content
            assert (len(opened), server.connections) == (3, 3)
        finally:
            await pool.aclose()
            nursery.cancel_scope.cancel()


async def test_chunked_answers_read_to_their_end_keep_their_connection() -> None:
    """API listings come through the pool too, and a server may send them chunked (a
    compressing proxy does): a chunked body read to its last chunk keeps the socket."""
    content = b'[{"name": "a.dat"}]' * 500
    server = _ChunkedServer(content, 1000)
    opened = []
    pool = StoragePool(lambda: opened.append(1))
    async with trio.open_nursery() as nursery:
        await server.start(nursery)
        try:
            for fill in (False, True, False):
                assert await _get(pool, server.port, headers={}, fill=fill) == content
            assert (len(opened), server.connections) == (1, 1)
        finally:
            await pool.aclose()
            nursery.cancel_scope.cancel()


async def test_api_listings_share_one_kept_alive_connection(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with SimvueClient.open(settings_for(server)) as client:
        run_id = server.run_ids("demo run")[0]
        await client.list_artifacts(run_id)
        before = _opened(client)
        for _ in range(5):
            assert await client.list_artifacts(run_id)
            assert await client.list_runs()
        assert _opened(client) == before

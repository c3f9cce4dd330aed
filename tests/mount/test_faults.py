"""Fault injection: the devserver's fault switches, then what a real mount does under them.

The first half checks each switch over plain HTTP (it misbehaves exactly as documented, and
only while it is on). The second half mounts a devserver with the real CLI and checks the
promises of docs/reliability.md through the kernel: retries and resumed downloads give
exact bytes, a stalled server costs one request its deadline while the rest of the mount
keeps answering, expired URLs are refreshed, corrupted content gives EIO instead of wrong
bytes, a refused token gives EACCES and recovers, and a killed daemon leaves a mount that
``simvuefs unmount`` clears.

Every server here is private to its test (``devserver``/``devserver_factory``), so switches
never leak into other tests.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel
from devserver_util import DevServer
from fuse_util import (
    Mount,
    config_file_of,
    daemon_pids,
    is_mounted,
    mount_command,
    mounted,
    run_tool,
    unmount,
    wait_until,
)

from simvuefs.backends import client as client_module
from simvuefs.backends.client import SimvueClient
from simvuefs.config import Settings
from simvuefs.errors import AuthError, IntegrityError, errno_for
from simvuefs.models import Artifact
from simvuefs.read import reader as reader_module
from simvuefs.read.reader import Reader, ReadHandle, open_reader

Factory = Callable[..., DevServer]

MIB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_run(server: DevServer, name: str = "faulty") -> str:
    answer = server.api("POST", "/runs", json={"name": name, "folder": "/", "status": "running"})
    answer.raise_for_status()
    run_id: str = answer.json()["id"]
    return run_id


def send_content(slot: dict[str, Any], content: bytes) -> httpx.Response:
    """Upload *content* the way *slot* (an answer of POST /api/artifacts) asks."""
    if slot.get("fields"):
        files = {"file": ("data.bin", content)}
        return httpx.post(slot["url"], data=slot["fields"], files=files, timeout=30)
    return httpx.put(slot["url"], content=content, timeout=30)


def add_artifact(
    server: DevServer, run_id: str, name: str, content: bytes, category: str = "output"
) -> dict[str, Any]:
    """Store *content* as artifact *name* of the run, as the official client does; return
    the artifact's record (with a fresh download URL)."""
    slot = server.api(
        "POST",
        "/artifacts",
        json={
            "name": name,
            "original_path": f"/work/{name}",
            "size": len(content),
            "mime_type": "application/octet-stream",
            "checksum": sha256(content),
            "metadata": None,
        },
    ).json()
    if slot["url"]:
        assert send_content(slot, content).status_code in (200, 204)
        server.api("PUT", f"/artifacts/{slot['id']}", json={"uploaded": True}).raise_for_status()
    attached = server.api(
        "PUT", f"/runs/{run_id}/artifacts/{slot['id']}", json={"category": category}
    )
    attached.raise_for_status()
    record: dict[str, Any] = server.api("GET", f"/artifacts/{slot['id']}").json()
    return record


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_token(server: DevServer, **body: Any) -> str:
    answer = server.http.post("/admin/tokens", json=body)
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def token_age(token: str) -> float:
    payload = token.split(".")[1]
    claims = httpx.Response(200, content=base64.urlsafe_b64decode(payload + "==")).json()
    return time.time() - float(claims["iat"])


# -- the switches over HTTP --------------------------------------------------------------------


def test_token_expiry_refuses_old_tokens_until_switched_off(devserver: DevServer) -> None:
    version = devserver.url + "/api/version"
    devserver.set_faults(token_expiry=1.0)
    time.sleep(max(0.0, 1.1 - token_age(devserver.token)))
    refused = httpx.get(version, headers=bearer(devserver.token))
    assert (refused.status_code, refused.json()) == (401, {"detail": "token has expired"})
    fresh = new_token(devserver)  # admin routes still accept the expired token
    assert httpx.get(version, headers=bearer(fresh)).status_code == 200
    time.sleep(1.1)
    assert httpx.get(version, headers=bearer(fresh)).status_code == 401
    assert devserver.stats()["faults_injected"]["token_expiry"] == 2
    devserver.clear_faults()
    assert httpx.get(version, headers=bearer(devserver.token)).status_code == 200


def test_revoking_tokens_keeps_only_newer_ones(devserver: DevServer) -> None:
    version = devserver.url + "/api/version"
    before = new_token(devserver)
    replacement = new_token(devserver, revoke_others=True)
    later = new_token(devserver)
    for token, status in ((devserver.token, 401), (before, 401), (replacement, 200), (later, 200)):
        assert httpx.get(version, headers=bearer(token)).status_code == status
    assert httpx.get(version, headers=bearer(before)).json() == {"detail": "token has been revoked"}
    assert devserver.faults()["token_not_before"] > 0
    devserver.clear_faults()
    assert httpx.get(version, headers=bearer(before)).status_code == 200


@pytest.mark.parametrize("style", ["put", "post"])
def test_bad_digest_count_refuses_correct_uploads(devserver_factory: Factory, style: str) -> None:
    server = devserver_factory("--upload-style", style, "--no-dedup")
    content = os.urandom(300_000)
    body = {
        "name": "x.bin",
        "original_path": "/x.bin",
        "size": len(content),
        "mime_type": "application/octet-stream",
        "checksum": sha256(content),
    }
    server.set_faults(bad_digest_count=1)
    first = send_content(server.api("POST", "/artifacts", json=body).json(), content)
    assert first.status_code == 400
    assert "<Code>BadDigest</Code>" in first.text
    second = send_content(server.api("POST", "/artifacts", json=body).json(), content)
    assert second.status_code in (200, 204)
    stats = server.stats()
    assert (stats["uploads"], stats["uploads_rejected"]) == (1, 1)
    assert stats["faults_injected"] == {"bad_digest": 1}


def test_corrupt_content_inverts_one_byte_of_bodies_covering_it(devserver: DevServer) -> None:
    content = os.urandom(3 * MIB)
    record = add_artifact(devserver, new_run(devserver), "data.bin", content)
    offset = 2 * MIB + 5
    devserver.set_faults(corrupt_content=True, corrupt_offset=offset)
    whole = httpx.get(record["url"]).content
    assert len(whole) == len(content)
    assert [i for i in range(len(content)) if whole[i] != content[i]] == [offset]
    assert whole[offset] == content[offset] ^ 0xFF
    ranged = httpx.get(record["url"], headers={"Range": f"bytes={offset - 2}-{offset + 2}"})
    assert ranged.content[2] == content[offset] ^ 0xFF
    elsewhere = httpx.get(record["url"], headers={"Range": "bytes=0-1023"})
    assert elsewhere.content == content[:1024]
    assert devserver.stats()["faults_injected"] == {"corrupt_content": 2}
    devserver.clear_faults()
    assert httpx.get(record["url"]).content == content


def test_listing_delay_slows_listings_only(devserver: DevServer) -> None:
    run_id = new_run(devserver)
    devserver.set_faults(listing_delay=0.5)
    for path, delayed in (
        ("/runs", True),
        (f"/runs/{run_id}/artifacts", True),
        (f"/runs/{run_id}", False),
        ("/version", False),
    ):
        began = time.monotonic()
        devserver.api("GET", path).raise_for_status()
        took = time.monotonic() - began
        assert (took >= 0.5) is delayed, (path, took)


def test_extra_runs_and_artifacts_make_huge_listings(devserver: DevServer) -> None:
    real = new_run(devserver, "real")
    devserver.set_faults(extra_runs=250, extra_artifacts=1000)
    names: list[str] = []
    start = 0
    while True:
        page = devserver.api("GET", "/runs", params={"count": 100, "start": start}).json()
        assert page["count"] == 251
        if not page["data"]:
            break
        names += [run["name"] for run in page["data"]]
        start += len(page["data"])
    assert names == ["real"] + [f"synthetic-{i:06d}" for i in range(250)]
    # Synthetic runs behave like real ones; every run has the synthetic artifacts.
    synthetic_run = devserver.api("GET", "/runs", params={"start": 250, "count": 1}).json()
    run_id = synthetic_run["data"][0]["id"]
    assert devserver.api("GET", f"/runs/{run_id}").json()["name"] == "synthetic-000249"
    for owner in (real, run_id):
        listing = devserver.run_artifacts(owner)
        assert len(listing) == 1000
        assert {a["category"] for a in listing} == {"output"}
        assert devserver.run_artifacts(owner, category="input") == []
    [one] = devserver.run_artifacts(real, name="synthetic-000007.dat")
    assert httpx.get(one["url"]).content == b""
    assert devserver.api("GET", f"/artifacts/{one['id']}").json()["name"] == one["name"]
    category = devserver.api("GET", f"/runs/{real}/artifacts/{one['id']}").json()
    assert category == {"category": "output"}
    # Filtered listings show only real runs; switched off, the synthetic ones are gone.
    filtered = devserver.api("GET", "/runs", params={"filters": '["name == real"]'}).json()
    assert filtered["count"] == 1
    devserver.clear_faults()
    assert devserver.api("GET", "/runs").json()["count"] == 1
    assert devserver.api("GET", f"/runs/{run_id}").status_code == 404
    assert devserver.run_artifacts(real) == []


@pytest.mark.parametrize("kind", ["", "truncated", "not_json", "wrong_types"])
def test_malformed_json_breaks_answers_as_told(devserver: DevServer, kind: str) -> None:
    run_id = new_run(devserver, "one")
    devserver.set_faults(
        malformed_json_count=1, malformed_json_kind=kind, malformed_json_route="GET /api/runs"
    )
    assert devserver.api("GET", f"/runs/{run_id}").json()["name"] == "one"  # other route
    broken = devserver.api("GET", "/runs")
    assert broken.status_code == 200
    if kind == "wrong_types":
        data = broken.json()
        assert data["count"] == "not a number"
        assert data["data"][0]["id"] == 12345
        assert data["data"][0]["tags"] == {"unexpected": True}
    else:
        with pytest.raises(ValueError, match="Expecting|Unterminated|JSON"):
            broken.json()
        assert (b"<html>" in broken.content) is (kind == "not_json")
    assert devserver.api("GET", "/runs").json()["count"] == 1  # the count is used up
    assert devserver.stats()["faults_injected"] == {"malformed_json": 1}


def test_new_switches_from_the_command_line(devserver_factory: Factory) -> None:
    server = devserver_factory(
        "--fault", "extra_runs=3", "--fault", "listing_delay=0.25", "--fault", "corrupt_content=on"
    )
    switches = server.faults()
    assert (switches["extra_runs"], switches["listing_delay"]) == (3, 0.25)
    assert switches["corrupt_content"] is True
    assert server.api("GET", "/runs").json()["count"] == 3


def test_new_switches_are_validated(devserver: DevServer) -> None:
    for body in (
        {"token_expiry": -1},
        {"bad_digest_count": -2},
        {"corrupt_offset": -1},
        {"extra_runs": 1.5},
        {"malformed_json_kind": "garbled"},
        {"malformed_json_rate": 1.5},
        {"listing_delay": "slow"},
    ):
        answer = devserver.http.put("/admin/faults", json=body)
        assert answer.status_code == 400, body
    assert not any(devserver.faults().values())
    assert devserver.http.post("/admin/tokens", json={"lifetime": 0}).status_code == 422


# -- the reader's checksum verification (no mount: a fake storage serving wrong bytes) ----------

BLOCK = 4096


class TamperedStorage:
    """Serves the reader's range requests from *served*, which may differ from the content
    the artifact's checksum describes."""

    def __init__(self, served: bytes) -> None:
        self.served = served
        self.requests = 0

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,  # unused: the reader copes
    ) -> bytes:
        self.requests += 1
        await trio.lowlevel.checkpoint()
        return self.served[start : start + length]

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[Any]:
        self.requests += 1
        storage = self

        class Body:
            pos = start

            async def receive(self, max_bytes: int) -> bytes:
                await trio.lowlevel.checkpoint()
                stop = len(storage.served) if end is None else end + 1
                chunk = storage.served[self.pos : min(stop, self.pos + min(max_bytes, 1000))]
                self.pos += len(chunk)
                return chunk

        yield Body()


def reader_settings() -> Settings:
    return Settings(
        url="http://127.0.0.1:1/api",
        token="unused",
        block_size=BLOCK,
        cache_bytes=256 * BLOCK,
        readahead_per_file=8 * BLOCK,
        readahead_total=32 * BLOCK,
        request_timeout=5.0,
    )


CONTENT = random.Random(7).randbytes(40 * BLOCK + 321)
ARTIFACT = Artifact(id="a1", name="data.bin", size=len(CONTENT), checksum=sha256(CONTENT))
CORRUPT = CONTENT[:100_000] + bytes([CONTENT[100_000] ^ 1]) + CONTENT[100_001:]


async def read_in_order(reader: Reader, handle: ReadHandle, chunk: int = 3000) -> bytes:
    out = bytearray()
    while data := await reader.read(handle, len(out), chunk):
        out += data
    return bytes(out)


async def test_a_sequential_read_is_verified_off_the_read_path() -> None:
    async with open_reader(TamperedStorage(CONTENT), reader_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        assert await read_in_order(reader, handle) == CONTENT
        stats = reader.statistics()
        assert (stats.verified, stats.verify_failures) == (1, 0)
        assert stats.hashed_bytes == len(CONTENT)
        await reader.release(handle)


async def read_until_error(reader: Reader, handle: ReadHandle) -> tuple[bytes, Exception | None]:
    """Read *handle* in order until the end or an error; return the bytes and the error."""
    out = bytearray()
    try:
        while data := await reader.read(handle, len(out), 3000):
            out += data
    except IntegrityError as exc:
        return bytes(out), exc
    return bytes(out), None


async def test_corrupt_content_fails_the_last_read_and_leaves_the_cache() -> None:
    storage = TamperedStorage(CORRUPT)
    async with open_reader(storage, reader_settings()) as reader:
        handle = reader.open(ARTIFACT, len(CONTENT))
        returned, error = await read_until_error(reader, handle)
        assert "does not match its checksum" in str(error)
        # Everything before the last read was returned; the last read never is.
        assert len(CONTENT) - 3000 < len(returned) < len(CONTENT)
        assert reader.statistics().verify_failures == 1
        assert reader.statistics().cache.entries == 0
        # The kernel retries a failed read-ahead read synchronously: that fails too.
        with pytest.raises(IntegrityError):
            await reader.read(handle, len(CONTENT) - 10, 10)
        with pytest.raises(IntegrityError):
            await reader.read(handle, 0, 10)
        await reader.release(handle)
        # Until the content verifies again, new handles must not trust the page cache.
        storage.served = CONTENT
        suspect = reader.open(ARTIFACT, len(CONTENT))
        assert suspect.keep_cache is False
        requests = storage.requests
        assert await read_in_order(reader, suspect) == CONTENT
        assert storage.requests > requests  # fetched again, not served from the cache
        await reader.release(suspect)
        trusted = reader.open(ARTIFACT, len(CONTENT))
        assert trusted.keep_cache is True
        await reader.release(trusted)
        assert reader.statistics().verified == 1


async def read_concurrently(
    reader: Reader, handle: ReadHandle, order: list[tuple[int, int]]
) -> int:
    """Read the pieces of *order* 8 at a time, each window's reads completing in the order
    given (as the kernel's concurrent read-ahead may); return how many failed verification."""
    failures = 0

    async def read_one(position: int, off: int, size: int) -> None:
        nonlocal failures
        await trio.sleep(position * 0.001)
        try:
            await reader.read(handle, off, size)
        except IntegrityError:
            failures += 1

    for window in range(0, len(order), 8):
        async with trio.open_nursery() as nursery:
            batch = order[window : window + 8]
            for position, (off, size) in enumerate(random.Random(window).sample(batch, len(batch))):
                nursery.start_soon(read_one, position, off, size)
    return failures


async def test_reads_completing_out_of_order_are_still_verified() -> None:
    """The kernel sends several reads at once; they may complete in any order."""
    pieces = [(off, min(5000, len(CONTENT) - off)) for off in range(0, len(CONTENT), 5000)]
    for served, failures in ((CORRUPT, 1), (CONTENT, 0)):
        async with open_reader(TamperedStorage(served), reader_settings()) as reader:
            handle = reader.open(ARTIFACT, len(CONTENT))
            assert await read_concurrently(reader, handle, pieces) == failures
            stats = reader.statistics()
            assert (stats.verified, stats.verify_failures) == (1 - failures, failures)


async def test_partial_or_random_reads_and_missing_checksums_are_not_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reader_module, "VERIFY_BACKLOG", 8 * BLOCK)
    async with open_reader(TamperedStorage(CORRUPT), reader_settings()) as reader:
        partial = reader.open(ARTIFACT, len(CONTENT))
        assert await reader.read(partial, 0, 150_000) == CORRUPT[:150_000]
        jumpy = reader.open(ARTIFACT, len(CONTENT))
        assert await reader.read(jumpy, 30 * BLOCK, 100) == CORRUPT[30 * BLOCK : 30 * BLOCK + 100]
        assert await read_in_order(reader, jumpy) == CORRUPT  # too far ahead: no verdict
        unchecked = Artifact(id="a2", name="x", size=len(CONTENT), checksum="")
        handle = reader.open(unchecked, len(CONTENT))
        assert await read_in_order(reader, handle) == CORRUPT
        stats = reader.statistics()
        assert (stats.verified, stats.verify_failures) == (0, 0)


# -- a refused token (the client against a fake API) --------------------------------------------


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
    settings = Settings(
        url="http://simvue.test/api", token="old-token", token_reload=lambda: found[0]
    )
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

    settings = Settings(url="http://simvue.test/api", token="first", token_reload=reload)
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


# -- through a real mount ---------------------------------------------------------------------

# What the mount must survive in one test; the daemon's log must never show an exception
# that reached the error boundary unplanned.
UNEXPECTED = ("failed unexpectedly", "Traceback")


@dataclass(frozen=True)
class Served:
    """A devserver with one run "faulty" holding a few artifacts of known content."""

    server: DevServer
    run_id: str
    files: dict[str, bytes]

    def path(self, mount: Mount, name: str) -> Path:
        return mount.path / "runs" / "faulty" / "output" / name


@pytest.fixture
def served(devserver: DevServer) -> Served:
    rng = random.Random(11)
    files = {
        "big.bin": b"".join(rng.randbytes(MIB) for _ in range(24)),
        "other.bin": rng.randbytes(3 * MIB + 17),
        "small.txt": b"".join(b"line %d\n" % i for i in range(20_000)),
    }
    run_id = new_run(devserver, "faulty")
    for name, content in files.items():
        add_artifact(devserver, run_id, name, content)
    return Served(devserver, run_id, files)


def cat(path: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    return run_tool(["cat", path], check=False, timeout=timeout)


def assert_clean_log(mount: Mount) -> None:
    text = mount.log_file.read_text(errors="replace")
    for marker in UNEXPECTED:
        assert marker not in text, mount.log_tail()


def test_transient_errors_and_dropped_downloads_still_give_exact_bytes(
    served: Served, tmp_path: Path
) -> None:
    server = served.server
    with mounted(server, tmp_path) as mount:
        assert sorted(os.listdir(served.path(mount, ""))) == sorted(served.files)
        server.reset_stats()
        server.set_faults(
            api_error_status=503,
            api_error_rate=0.2,
            storage_error_status=503,
            storage_error_count=1,  # the first storage request fails for sure, then at random
            storage_error_rate=0.2,
            drop_after_bytes=3 * MIB,
        )
        for name, content in served.files.items():
            result = cat(served.path(mount, name))
            assert result.returncode == 0, (name, result.stderr, mount.log_tail())
            assert sha256(result.stdout) == sha256(content), name
        stats = server.stats()
        injected = stats["faults_injected"]
        assert injected["drop_after_bytes"] >= 3  # 24 MiB, no body longer than 3 MiB
        assert injected.get("storage_error", 0) >= 1
        # Resumed from the last byte received, not started over: little is fetched twice.
        total = sum(len(content) for content in served.files.values())
        assert stats["bytes_served"] < 1.5 * total, stats["bytes_served"]
        assert_clean_log(mount)


def test_expired_download_urls_are_refreshed(served: Served, tmp_path: Path) -> None:
    server = served.server
    server.set_faults(url_expiry=1.0)  # every URL the mount is given dies after a second
    with mounted(server, tmp_path, "--metadata-ttl", "indefinite") as mount:
        assert sorted(os.listdir(served.path(mount, ""))) == sorted(served.files)
        time.sleep(2.2)  # expiry times are whole seconds, rounded up: at most 2 s from now
        server.reset_stats()
        for name, content in served.files.items():
            assert run_tool(["cat", served.path(mount, name)]).stdout == content
        refreshes = server.stats()["api_requests"].get("GET /api/artifacts/{artifact_id}", 0)
        assert refreshes >= len(served.files)
        assert_clean_log(mount)


def test_corrupted_content_gives_eio_never_wrong_bytes(served: Served, tmp_path: Path) -> None:
    server = served.server
    content = served.files["big.bin"]
    server.set_faults(corrupt_content=True, corrupt_offset=len(content) // 2)
    with mounted(server, tmp_path) as mount:
        path = served.path(mount, "big.bin")
        result = cat(path)
        assert result.returncode != 0
        assert b"Input/output error" in result.stderr
        assert len(result.stdout) < len(content)  # the last read never returns its bytes
        log = mount.log_file.read_text(errors="replace")
        assert "does not match its sha256" in log
        # Other files are unaffected; once storage is sound the same file reads correctly
        # (the kernel's cached pages of the bad read are dropped at the next open).
        assert (
            run_tool(["cat", served.path(mount, "small.txt")]).stdout == served.files["small.txt"]
        )
        server.clear_faults()
        assert sha256(run_tool(["cat", path]).stdout) == sha256(content)
        assert sha256(run_tool(["cat", path]).stdout) == sha256(content)
        assert_clean_log(mount)


def test_no_verify_mount_skips_the_sha256_check(served: Served, tmp_path: Path) -> None:
    """--no-verify (daemonised, so the flag also survives the hand-over to the daemon): the
    corrupted byte reaches the reader, nothing is hashed, and the log says nothing."""
    server = served.server
    content = served.files["big.bin"]
    server.set_faults(corrupt_content=True, corrupt_offset=len(content) // 2)
    with mounted(server, tmp_path, "--no-verify") as mount:
        result = cat(served.path(mount, "big.bin"))
        assert result.returncode == 0, (result.stderr, mount.log_tail())
        assert len(result.stdout) == len(content)
        differing = [
            i for i, (a, b) in enumerate(zip(result.stdout, content, strict=True)) if a != b
        ]
        assert differing == [len(content) // 2]
        assert "sha256" not in mount.log_file.read_text(errors="replace")


@pytest.mark.parametrize("kind", ["truncated", "not_json", "wrong_types"])
def test_malformed_api_answers_never_take_the_mount_down(
    served: Served, tmp_path: Path, kind: str
) -> None:
    server = served.server
    with mounted(server, tmp_path) as mount:
        runs = mount.path / "runs"
        small = served.path(mount, "small.txt")
        assert small.read_bytes() == served.files["small.txt"]
        server.set_faults(malformed_json_rate=1.0, malformed_json_kind=kind)
        time.sleep(1.2)  # the metadata TTL ("minimal", 1 s): listings are asked for again
        listing = run_tool(["ls", runs], check=False)
        if kind == "wrong_types":  # well-formed JSON with unusable entries: skipped, warned
            assert listing.returncode == 0
            assert listing.stdout == b""
        else:
            assert b"Input/output error" in listing.stderr
        server.clear_faults()
        time.sleep(1.2)
        assert os.listdir(runs) == ["faulty"]
        assert small.read_bytes() == served.files["small.txt"]
        log = mount.log_file.read_text(errors="replace")
        expected = "malformed entry" if kind == "wrong_types" else "not valid JSON"
        assert expected in log
        assert_clean_log(mount)


def test_kill_9_leaves_a_dead_mount_that_unmount_clears(served: Served, tmp_path: Path) -> None:
    with mounted(served.server, tmp_path) as mount:
        assert os.listdir(mount.path / "runs") == ["faulty"]
        os.kill(mount.pid, signal.SIGKILL)
        assert wait_until(lambda: not daemon_pids(mount.path), 10.0)
        # The kernel answers ECONNABORTED or ENOTCONN ("transport endpoint is not connected").
        with pytest.raises(OSError, match="connect") as caught:
            os.listdir(mount.path)
        assert caught.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        unmounted = run_tool([sys.executable, "-m", "simvuefs", "unmount", mount.path])
        assert unmounted.stderr == b""
        assert not is_mounted(mount.path)
        mountpoint = mount.path
    # A new mount at the same place works.
    log_file = tmp_path / "again.log"
    argv = mount_command(config_file_of(served.server), mountpoint, log_file)
    try:
        run_tool(argv, timeout=60)
        content = run_tool(["cat", served.path(mount, "small.txt")]).stdout
        assert content == served.files["small.txt"]
    finally:
        unmount(mountpoint)
        assert wait_until(lambda: not daemon_pids(mountpoint), 10.0)
    assert not is_mounted(mountpoint)


# Deadlines of the mounts below (--request-timeout): short, so that stalls cost little time.
REQUEST_TIMEOUT = 3.0
SLACK = 4.0  # a loaded 2-core machine: process start-up, scheduling


def timed(
    args: list[str | Path], timeout: float = 60.0
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    began = time.monotonic()
    result = run_tool(args, check=False, timeout=timeout)
    return result, time.monotonic() - began


def test_a_stalled_download_times_out_while_the_mount_keeps_serving(
    served: Served, tmp_path: Path
) -> None:
    server = served.server
    with mounted(server, tmp_path, "--request-timeout", str(REQUEST_TIMEOUT)) as mount:
        small = served.path(mount, "small.txt")
        assert small.read_bytes() == served.files["small.txt"]  # now cached
        server.set_faults(stall_seconds=REQUEST_TIMEOUT + 6, stall_where="storage_before")
        stalled: dict[str, Any] = {}

        def read_uncached() -> None:
            # O_DIRECT: one FUSE read, which the kernel does not retry.
            big = served.path(mount, "big.bin")
            stalled["result"], stalled["took"] = timed(
                ["dd", f"if={big}", "iflag=direct", "bs=1M", "count=1", "status=none"]
            )

        worker = threading.Thread(target=read_uncached)
        worker.start()
        try:
            time.sleep(0.5)  # the read is waiting for storage now
            for _ in range(3):  # listings and cached content keep coming meanwhile
                listing, took = timed(["ls", served.path(mount, "")])
                assert listing.stdout.decode().split() == sorted(served.files)
                assert took < 2.0, took
                content, took = timed(["cat", small])
                assert content.stdout == served.files["small.txt"]
                assert took < 2.0, took
        finally:
            worker.join(REQUEST_TIMEOUT + SLACK + 30)
        result, took = stalled["result"], stalled["took"]
        assert result.returncode != 0
        assert b"Connection timed out" in result.stderr, result.stderr
        assert REQUEST_TIMEOUT - 0.5 <= took < REQUEST_TIMEOUT + SLACK, took
        server.clear_faults()
        assert sha256(run_tool(["cat", served.path(mount, "big.bin")]).stdout) == sha256(
            served.files["big.bin"]
        )
        assert_clean_log(mount)


def test_slow_listings_wait_and_stalled_ones_time_out(served: Served, tmp_path: Path) -> None:
    server = served.server
    with mounted(server, tmp_path, "--request-timeout", str(REQUEST_TIMEOUT)) as mount:
        runs = mount.path / "runs"
        server.set_faults(listing_delay=1.5)
        time.sleep(1.2)  # past the metadata TTL
        listing, took = timed(["ls", runs])
        assert listing.stdout == b"faulty\n"
        assert took >= 1.5
        server.set_faults(listing_delay=REQUEST_TIMEOUT + 4)
        time.sleep(1.2)
        listing, took = timed(["ls", runs])
        assert b"Connection timed out" in listing.stderr, listing.stderr
        assert took < REQUEST_TIMEOUT + SLACK, took
        server.clear_faults()
        time.sleep(1.2)
        assert os.listdir(runs) == ["faulty"]
        assert_clean_log(mount)


def write_config(path: Path, url: str, token: str) -> None:
    path.write_text(f'[server]\nurl = "{url}"\ntoken = "{token}"\n')


def test_a_revoked_token_gives_eacces_until_a_valid_one_is_configured(
    served: Served, tmp_path: Path
) -> None:
    server = served.server
    old_token = server.token
    with mounted(server, tmp_path) as mount:
        runs = mount.path / "runs"
        assert os.listdir(runs) == ["faulty"]
        new_token = server.http.post("/admin/tokens", json={"revoke_others": True}).json()["token"]
        time.sleep(1.2)  # past the metadata TTL: the next listing asks the server
        with pytest.raises(PermissionError) as caught:
            os.listdir(runs)
        assert caught.value.errno == errno.EACCES
        log = mount.log_file.read_text(errors="replace")
        assert "the Simvue server refuses the token (token has been revoked)" in log
        # Configured again (where the mount found it): the mount picks it up by itself.
        write_config(server.config_path, server.url, new_token)
        assert wait_until(lambda: run_tool(["ls", runs], check=False).stdout == b"faulty\n", 10)
        assert served.path(mount, "small.txt").read_bytes() == served.files["small.txt"]
        log = mount.log_file.read_text(errors="replace")
        assert old_token not in log
        assert new_token not in log
        assert_clean_log(mount)

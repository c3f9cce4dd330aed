"""SimvueClient against the real devserver over HTTP: listings, ranged and streamed reads,
retries, resumed and stalled downloads, refreshed URLs, the upload sequence.

What a real server cannot show (the headers storage receives, malformed answers) is checked
against fake APIs in ``tests/unit/test_client_mocked.py``.
"""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from devserver_util import SEEDED_LARGE_SIZE
from helpers import (
    attach_artifact,
    create_artifact,
    new_run,
    send_content,
    settings_for,
    store_artifact,
)

from simvuefs.backends.client import RangeStream, SimvueClient
from simvuefs.config import MIB
from simvuefs.devserver import seed
from simvuefs.errors import (
    AuthError,
    DeadlineExceeded,
    NotFound,
    ServerError,
    StatusError,
    TransportError,
    UploadRejected,
    UrlExpired,
)
from simvuefs.models import Artifact, UploadSlot
from testbed.devserver import DevServer


def _client(server: DevServer, **overrides: Any) -> AbstractAsyncContextManager[SimvueClient]:
    return SimvueClient.open(settings_for(server, **overrides))


def _seeded_artifact(server: DevServer, run_name: str, artifact_name: str) -> dict[str, Any]:
    run_id = server.run_ids(run_name)[0]
    (entry,) = server.run_artifacts(run_id, name=artifact_name)
    return entry


async def _drain(body: RangeStream) -> None:
    while await body.receive(MIB):
        pass


async def _artifact(client: SimvueClient, server: DevServer, run: str, name: str) -> Artifact:
    (artifact,) = await client.list_artifacts(server.run_ids(run)[0], name=name)
    return artifact


async def test_server_version_and_wrong_token(seeded_devserver: DevServer) -> None:
    async with _client(seeded_devserver) as client:
        assert (await client.server_version()).startswith("1.")
    settings = settings_for(seeded_devserver, token="not-the-token")
    async with SimvueClient.open(settings) as client:
        with pytest.raises(AuthError, match="the server rejected the token"):
            await client.server_version()
        with pytest.raises(AuthError) as info:
            await client.list_runs()
    assert info.value.status == 401
    assert "not-the-token" not in str(info.value)


async def test_unreachable_server_fails_fast_with_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_for(url=f"http://127.0.0.1:{port}/api", retry_attempts=3)
    async with SimvueClient.open(settings) as client:
        with pytest.raises(TransportError) as info:
            await client.list_runs()
    assert not isinstance(info.value, DeadlineExceeded)  # refused at once, not timed out
    assert f"GET http://127.0.0.1:{port}/api/runs" in str(info.value)


async def test_list_runs_pages_through_everything_and_filters(devserver: DevServer) -> None:
    for index in range(230):
        folder = "/even" if index % 2 == 0 else "/odd"
        status = "completed" if index % 3 == 0 else "running"
        answer = devserver.api(
            "POST", "/runs", json={"name": f"run-{index:03d}", "folder": folder, "status": status}
        )
        answer.raise_for_status()
    devserver.reset_stats()
    async with _client(devserver) as client:
        runs = await client.list_runs()
        assert sorted(run.name for run in runs) == [f"run-{i:03d}" for i in range(230)]
        assert len({run.id for run in runs}) == 230
        pages = devserver.stats()["api_requests"]["GET /api/runs"]
        assert pages == 3
        even = await client.list_runs(["folder.path == /even"])
        assert len(even) == 115
        assert {run.folder for run in even} == {"/even"}
        both = await client.list_runs(["folder.path == /even", "status == completed"])
        assert sorted(run.name for run in both) == [f"run-{i:03d}" for i in range(0, 230, 6)]
        (one,) = await client.list_runs(["name == run-042"])
        assert one.name == "run-042"
        assert await client.list_runs(["name == nothing-like-this"]) == []
        assert (await client.get_run(one.id)).name == "run-042"
        with pytest.raises(NotFound):
            await client.get_run("no-such-run")
    assert client.statistics().retries == 0
    source, counters = client.counters()  # what `simvuefs status` shows of this backend
    assert (source, counters["retries"]) == ("client", 0)
    assert counters["requests"] == client.statistics().requests > 0


async def test_listing_and_reading_seeded_artifacts(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    run_id = server.run_ids("demo run")[0]
    async with _client(server) as client:
        everything = await client.list_artifacts(run_id)
        assert {a.name for a in everything} >= {"notes.txt", "system/mesh.dat", "large.bin"}
        inputs = await client.list_artifacts(run_id, category="input")
        assert {(a.name, a.category) for a in inputs} == {
            ("notes.txt", "input"),
            ("system/mesh.dat", "input"),
        }
        notes = await _artifact(client, server, "demo run", "notes.txt")
        assert await client.read_range(notes, 0, 1000) == seed.ARTIFACTS["notes"].content
        assert await client.read_range(notes, 5, 3) == b"run"
        fetched = await client.get_artifact(notes.id)
        assert (fetched.name, fetched.checksum) == ("notes.txt", notes.checksum)
        with pytest.raises(NotFound):
            await client.list_artifacts("no-such-run")
        with pytest.raises(NotFound):
            await client.get_artifact("no-such-artifact")


async def test_content_length_of_object_and_empty_artifacts(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    summary_bytes = seed.ARTIFACTS["summary"].content
    assert summary_bytes is not None
    async with _client(server) as client:
        summary = await _artifact(client, server, "demo run", "summary")
        assert summary.size == len(summary_bytes) + seed.OBJECT_SIZE_OVERHEAD
        assert await client.content_length(summary) == len(summary_bytes)
        empty = await _artifact(client, server, "demo run", "empty.log")
        assert await client.content_length(empty) == 0
        assert await client.read_range(empty, 0, 10) == b""
        server.set_faults(ignore_range=True)
        assert await client.content_length(summary) == len(summary_bytes)


async def test_range_and_the_200_fallback(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    size = SEEDED_LARGE_SIZE
    offset = 5 * MIB + 12345
    expected = seed.large_content(offset, 300_000)
    async with _client(server) as client:
        large = await _artifact(client, server, "demo run", "large.bin")
        assert large.size == size
        for ignore_range in (False, True):
            server.set_faults(ignore_range=ignore_range)
            assert await client.read_range(large, offset, 300_000) == expected
            assert await client.read_range(large, size - 10, 100) == seed.large_content(
                size - 10, 10
            )
            async with client.open_range(large, offset, offset + 299_999) as body:
                assert body.status == (200 if ignore_range else 206)
                assert body.total_size == size
                received = b""
                while chunk := await body.receive(64 * 1024):
                    assert len(chunk) <= 64 * 1024
                    received += chunk
            assert received == expected
            async with client.open_range(large, size + 10) as body:
                assert body.status == (200 if ignore_range else 416)
                assert body.total_size == size
                assert await body.receive(100) == b""
        assert await client.content_length(large) == size


async def test_streaming_a_whole_artifact_matches_its_checksum(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _client(server) as client:
        large = await _artifact(client, server, "demo run", "large.bin")
        digest = hashlib.sha256()
        async with client.open_range(large, 0) as body:
            while chunk := await body.receive(4 * MIB):
                digest.update(chunk)
        assert digest.hexdigest() == large.checksum
        assert client.statistics().bytes_downloaded >= SEEDED_LARGE_SIZE


async def test_expired_url_is_refreshed_once_and_remembered(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    server.set_faults(url_expiry=-1.0)  # URLs minted now are already expired
    async with _client(server) as client:
        stale = await _artifact(client, server, "demo run", "notes.txt")
        with pytest.raises(UrlExpired):
            await client.read_range(stale, 0, 4)  # the refreshed URL is expired too
        server.clear_faults()
        assert await client.read_range(stale, 0, 4) == b"Demo"
        refreshes = client.statistics().url_refreshes
        assert await client.read_range(stale, 5, 3) == b"run"
        assert client.statistics().url_refreshes == refreshes  # the fresh URL is remembered


async def test_503_is_retried_for_api_and_storage(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _client(server, retry_attempts=4) as client:
        server.set_faults(api_error_status=503, api_error_count=2)
        assert len(await client.list_runs()) == len(seed.RUNS)
        assert client.statistics().retries == 2
        notes = await _artifact(client, server, "demo run", "notes.txt")
        server.set_faults(storage_error_status=503, storage_error_count=3)
        assert await client.read_range(notes, 0, 4) == b"Demo"
        assert client.statistics().retries == 5
        server.set_faults(api_error_status=503, api_error_count=10)
        with pytest.raises(ServerError) as info:
            await client.list_runs()
        assert info.value.status == 503
        server.set_faults(api_error_status=500, api_error_count=1)
        with pytest.raises(ServerError):
            await client.get_run("whatever")  # 500 is not retried
        assert server.faults()["api_error_count"] == 0


async def test_broken_downloads_resume(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _client(server) as client:
        large = await _artifact(client, server, "demo run", "large.bin")
        server.set_faults(drop_after_bytes=300_000)
        assert await client.read_range(large, 100, MIB) == seed.large_content(100, MIB)
        async with client.open_range(large, 0) as body:
            with pytest.raises(TransportError):
                await _drain(body)


@pytest.mark.parametrize(
    ("where", "call"),
    [("api", "list_runs"), ("storage_before", "read_range"), ("storage_middle", "read_range")],
)
async def test_a_stalled_server_hits_the_deadline(
    seeded_devserver: DevServer, where: str, call: str
) -> None:
    server = seeded_devserver
    async with _client(server, request_timeout=1.0, read_timeout=5.0) as client:
        large = await _artifact(client, server, "demo run", "large.bin")
        server.set_faults(stall_seconds=10.0, stall_where=where)
        stalled = client.list_runs() if call == "list_runs" else client.read_range(large, 0, MIB)
        with pytest.raises(DeadlineExceeded, match="within 1 s"):  # not the 5 s read timeout
            await stalled


async def test_a_stalled_stream_hits_the_read_timeout(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    async with _client(server, read_timeout=0.5) as client:
        large = await _artifact(client, server, "demo run", "large.bin")
        server.set_faults(stall_seconds=10.0, stall_where="storage_middle")
        async with client.open_range(large, 0, 4 * MIB - 1) as body:
            # The stall ends long before the 30 s request deadline: only the read timeout
            # can end the body early.
            with pytest.raises(DeadlineExceeded):
                await _drain(body)


@pytest.mark.parametrize("style", ["put", "post"])
async def test_upload_sequence_dedup_and_bad_digest(
    devserver_factory: Callable[..., DevServer], tmp_path: Path, style: str
) -> None:
    server = devserver_factory("--upload-style", style)
    run_id = server.api("POST", "/runs", json={"name": "uploads"}).json()["id"]
    content = random.Random(7).randbytes(3 * MIB + 17)
    checksum = hashlib.sha256(content).hexdigest()
    local = tmp_path / "data.bin"
    local.write_bytes(content)
    async with _client(server) as client:

        async def register(name: str, digest: str = checksum) -> UploadSlot:
            return await client.create_artifact(
                name=name,
                original_path=f"/work/{name}",
                size=len(content),
                mime_type="application/octet-stream",
                checksum=digest,
            )

        slot = await register("data.bin")
        assert slot.url is not None
        assert bool(slot.fields) == (style == "post")
        server.set_faults(storage_error_status=503, storage_error_count=1)
        await client.upload_content(slot, local, len(content), "data.bin")
        assert client.statistics().retries == 1  # the body was sent again from the start
        await client.mark_uploaded(slot.artifact_id)
        await client.attach(run_id, slot.artifact_id, "input")
        assert (await client.get_artifact(slot.artifact_id)).name == "data.bin"
        (listed,) = await client.list_artifacts(run_id, category="input")
        assert (listed.id, listed.size, listed.checksum) == (
            slot.artifact_id,
            len(content),
            checksum,
        )
        assert await client.read_range(listed, 0, len(content)) == content

        copy = await register("copy.bin")  # same content: the server has it already
        assert copy.url is None
        await client.upload_content(copy, local, len(content), "copy.bin")  # nothing to send
        await client.attach(run_id, copy.artifact_id, "output")
        (listed_copy,) = await client.list_artifacts(run_id, category="output")
        assert await client.read_range(listed_copy, MIB, 10) == content[MIB : MIB + 10]

        liar = await register("liar.bin", hashlib.sha256(b"something else").hexdigest())
        with pytest.raises(UploadRejected, match="BadDigest") as info:
            await client.upload_content(liar, local, len(content), "liar.bin")
        assert info.value.status == 400
        assert "sig=" not in str(info.value)
    assert client.statistics().bytes_uploaded >= 2 * len(content)


async def test_validation_errors_and_delete(devserver: DevServer) -> None:
    async with _client(devserver) as client:
        with pytest.raises(StatusError, match="must be a hex sha256") as info:
            await client.create_artifact(
                name="x", original_path="/x", size=1, mime_type="text/plain", checksum="nope"
            )
        assert info.value.status == 422
        slot = await client.create_artifact(
            name="gone.txt",
            original_path="/gone.txt",
            size=0,
            mime_type="text/plain",
            checksum=hashlib.sha256(b"").hexdigest(),
        )
        assert (await client.get_artifact(slot.artifact_id)).name == "gone.txt"
        await client.delete_artifact(slot.artifact_id)
        with pytest.raises(NotFound):
            await client.get_artifact(slot.artifact_id)
        with pytest.raises(NotFound):
            await client.delete_artifact(slot.artifact_id)


# -- listings as the official client asks for them (issue 15, items 1, 8, 9) -----------------


def _make_runs(server: DevServer, count: int, prefix: str = "run") -> list[str]:
    """Create *count* runs with tags and metadata in folders /f0 and /f1; their names."""
    names = [f"{prefix}-{index:02d}" for index in range(count)]
    for index, name in enumerate(names):
        body = {"name": name, "folder": f"/f{index % 2}", "tags": ["t"], "metadata": {"i": index}}
        server.api("POST", "/runs", json=body).raise_for_status()
    return names


async def test_list_runs_asks_a_realistic_server_for_what_it_shows(
    devserver_factory: Callable[..., DevServer],
) -> None:
    # --realistic leaves out fields nobody asked for; page_size=7 caps pages below the 100
    # asked for, so the 20 runs take 3 pages.
    server = devserver_factory("--realistic", "--fault", "page_size=7")
    names = _make_runs(server, 20)
    server.reset_stats()
    async with _client(server) as client:
        runs = await client.list_runs()
        assert sorted(run.name for run in runs) == names
        assert {(run.name, run.folder, run.metadata["i"], run.tags) for run in runs} == {
            (name, f"/f{i % 2}", i, ("t",)) for i, name in enumerate(names)
        }
        assert server.stats()["api_requests"]["GET /api/runs"] == 3
        odd = await client.list_runs(["folder.path == /f1"])
        assert sorted(run.name for run in odd) == names[1::2]


@pytest.mark.parametrize("realistic", [False, True])
async def test_list_runs_asks_for_basic_fields_a_server_leaves_out(
    devserver_factory: Callable[..., DevServer], realistic: bool
) -> None:
    # basic_only_when_asked: name, folder, status, ... only with return_basic=True, which
    # SimvueClient sends (issue 15).
    flags = ["--realistic"] if realistic else []
    server = devserver_factory(*flags, "--fault", "basic_only_when_asked=true")
    names = _make_runs(server, 4)
    bare = server.api("GET", "/runs").json()["data"]
    assert [list(run) for run in bare] == [["id"]] * len(names)  # no flags: only ids
    async with _client(server) as client:
        runs = await client.list_runs()
    assert {(run.name, run.folder, run.status, run.tags) for run in runs} == {
        (name, f"/f{i % 2}", "running", ("t",)) for i, name in enumerate(names)
    }


class _AfterRunsPages(httpx.AsyncBaseTransport):
    """The network, calling *action* after each of the first *times* answers to
    ``GET /api/runs`` (once the server has made the page, before the client reads it)."""

    def __init__(self, action: Callable[[], None], times: int) -> None:
        self._network = httpx.AsyncHTTPTransport()
        self._action = action
        self._times = times

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._network.handle_async_request(request)
        if request.method == "GET" and request.url.path.endswith("/api/runs") and self._times:
            self._times -= 1
            self._action()
        return response

    async def aclose(self) -> None:
        await self._network.aclose()


async def test_runs_created_while_pages_are_fetched_push_none_out(
    devserver_factory: Callable[..., DevServer],
) -> None:
    # A realistic server lists newest first unless asked otherwise: without the client's
    # sorting, the 5 runs made after the first page would push page 1 onto page 2, and the
    # client would stop at a page of runs it has seen, missing the oldest.
    server = devserver_factory("--realistic", "--fault", "page_size=5")
    names = _make_runs(server, 12)
    made: list[str] = []

    def make_more() -> None:
        made.extend(_make_runs(server, 5, prefix=f"new{len(made)}"))

    transport = _AfterRunsPages(make_more, times=2)
    async with SimvueClient.open(settings_for(server), transport=transport) as client:
        listed = [run.name for run in await client.list_runs()]
    assert len(made) == 10
    assert sorted(set(listed) - set(made)) == names
    assert len(listed) == len(set(listed))


async def test_sizes_and_content_when_storage_sends_no_length(
    seeded_devserver: DevServer,
) -> None:
    server = seeded_devserver
    summary_bytes = seed.ARTIFACTS["summary"].content
    assert summary_bytes is not None
    server.set_faults(chunked_no_length=True)
    async with _client(server) as client:
        summary = await _artifact(client, server, "demo run", "summary")
        async with client.open_range(summary, 0, 0) as body:
            assert (body.status, body.total_size) == (200, None)
        assert await client.content_length(summary) == len(summary_bytes)
        empty = await _artifact(client, server, "demo run", "empty.log")
        assert await client.content_length(empty) == 0
        large = await _artifact(client, server, "demo run", "large.bin")
        offset = 3 * MIB + 7
        assert await client.read_range(large, offset, 100_000) == seed.large_content(
            offset, 100_000
        )
        assert await client.read_range(summary, 5, 1000) == summary_bytes[5:]
    assert server.stats()["faults_injected"]["chunked_no_length"] >= 4


async def test_artifacts_not_uploaded_yet_are_left_out(devserver: DevServer) -> None:
    run_id = new_run(devserver, "uploading")
    store_artifact(devserver, run_id, "done.txt", b"done")
    content = b"arrives later"
    slot = create_artifact(devserver, "later.txt", content)
    attach_artifact(devserver, run_id, slot["id"], "output")
    listed = {entry["name"]: entry["uploaded"] for entry in devserver.run_artifacts(run_id)}
    assert listed == {"done.txt": True, "later.txt": False}
    async with _client(devserver) as client:
        assert [a.name for a in await client.list_artifacts(run_id)] == ["done.txt"]
        assert await client.list_artifacts(run_id, name="later.txt") == []
        assert send_content(slot, content).status_code in (200, 204)
        devserver.api("PUT", f"/artifacts/{slot['id']}", json={"uploaded": True})
        (later,) = await client.list_artifacts(run_id, category="output", name="later.txt")
        assert await client.read_range(later, 0, 100) == content

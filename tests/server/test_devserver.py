"""The devserver on its own, over real HTTP: startup, auth, API, storage, faults, persistence.

Servers come from the fixtures in conftest.py (subprocesses on 127.0.0.1). The seeded
server is shared by the session and is only read here. The newer fault switches are checked
in ``test_fault_switches.py``; the devserver's parts that need no server (the multipart
parser, seeding a store) in ``tests/unit/test_devserver_local.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from devserver_util import SEEDED_LARGE_SIZE
from helpers import multipart_body, sha256

from simvuefs.devserver.auth import mint_token, verify_token
from simvuefs.devserver.seed import (
    ARTIFACTS,
    RUNS,
    SeedRun,
    artifact_content,
    large_content,
)
from simvuefs.models import NAME_REGEX
from testbed.devserver import DevServer

MIB = 1024 * 1024
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
BAD_DIGEST = (
    "<Code>BadDigest</Code><Message>The SHA256 you specified did not match the calculated "
    "checksum.</Message>"
)

Factory = Callable[..., DevServer]


def artifact_by_name(server: DevServer, run_name: str, name: str) -> dict[str, Any]:
    [run_id] = server.run_ids(run_name)
    [artifact] = server.run_artifacts(run_id, name=name)
    return artifact


def seeded_runs(server: DevServer) -> list[tuple[SeedRun, str]]:
    """Pair each seeded run description with its id (same-name runs: oldest first)."""
    pairs = []
    for name in dict.fromkeys(run.name for run in RUNS):
        described = [run for run in RUNS if run.name == name]
        pairs += list(zip(described, server.run_ids(name), strict=True))
    return pairs


@pytest.fixture
def large(seeded_devserver: DevServer) -> dict[str, Any]:
    """The seeded large artifact (fresh signed URL)."""
    return artifact_by_name(seeded_devserver, "demo run", "large.bin")


def new_artifact(server: DevServer, content: bytes, name: str = "data.bin") -> dict[str, Any]:
    """POST /api/artifacts for *content*; return the answer (id, url[, fields])."""
    response = server.api(
        "POST",
        "/artifacts",
        json={
            "name": name,
            "original_path": f"/tmp/{name}",
            "size": len(content),
            "mime_type": "application/octet-stream",
            "checksum": sha256(content),
            "metadata": None,
        },
    )
    assert response.status_code == 200, response.text
    slot: dict[str, Any] = response.json()
    return slot


def upload(slot: dict[str, Any], chunks: Iterator[bytes] | bytes) -> httpx.Response:
    """Upload *chunks* the way the slot asks (PUT raw, or POST multipart)."""
    if isinstance(chunks, bytes):
        chunks = iter([chunks])
    if slot.get("fields"):
        boundary = "simvuefs-test-boundary"
        return httpx.post(
            slot["url"],
            content=multipart_body(slot["fields"], chunks, boundary),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=60,
        )
    return httpx.put(slot["url"], content=chunks, timeout=60)


def store_artifact(server: DevServer, content: bytes, name: str = "data.bin") -> str:
    """Create, upload and mark an artifact; return its id."""
    slot = new_artifact(server, content, name)
    if slot["url"]:
        assert upload(slot, content).status_code in (200, 204)
        server.api("PUT", f"/artifacts/{slot['id']}", json={"uploaded": True})
    return str(slot["id"])


def fresh_url(server: DevServer, artifact_id: str) -> str:
    url: str = server.api("GET", f"/artifacts/{artifact_id}").json()["url"]
    return url


# -- startup, configuration, signals ------------------------------------------------------


def test_listening_line_and_written_config(devserver: DevServer) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", devserver.url)
    assert devserver.config_path.stat().st_mode & 0o777 == 0o600
    config = tomllib.loads(devserver.config_path.read_text())
    assert config == {"server": {"url": devserver.url, "token": devserver.token}}
    secret = bytes.fromhex((devserver.data_dir / "secret").read_text())
    assert (devserver.data_dir / "secret").stat().st_mode & 0o777 == 0o600
    claims = verify_token(secret, devserver.token)
    assert 364 * 86400 < claims["exp"] - time.time() <= 365 * 86400
    assert devserver.api("GET", "/version").json() == {"version": "1.3.0"}
    assert (devserver.data_dir / "simvue.db").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly(devserver_factory: Factory, sig: int) -> None:
    server = devserver_factory()
    assert server.stop(sig) == 0
    assert "Traceback" not in server.log()


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simvuefs", "devserver", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--data", "{file}"], 1, "is not usable"),
        (["--data", "{tmp}/d", "--fault", "no_such_switch=1"], 2, "NAME one of"),
        (["--data", "{tmp}/d", "--fault", "api_error_rate=lots"], 2, "not a float"),
        (["--data", "{tmp}/d", "--port", "70000"], 2, "not a TCP port"),
        (["--data", "{tmp}/d", "--large-size", "12 parsecs"], 2, "not a size"),
        (["--data", "{tmp}/d", "--write-config", "{tmp}/missing/simvue.toml"], 1, "cannot write"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(
    tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    (tmp_path / "file").write_text("not a directory")
    args = [a.format(tmp=tmp_path, file=tmp_path / "file" / "sub") for a in args]
    result = run_cli(tmp_path, *args)
    assert result.returncode == status
    assert result.stdout == ""
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if status == 1:
        assert len(result.stderr.strip().splitlines()) == 1
    else:
        assert not (tmp_path / "d").exists()  # refused before touching the data directory


def test_port_in_use_is_a_usage_error(devserver: DevServer, tmp_path: Path) -> None:
    port = devserver.url.rsplit(":", 1)[1]
    result = run_cli(tmp_path, "--data", str(tmp_path / "d"), "--port", port)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_persistence_across_restart(devserver: DevServer) -> None:
    old_token = devserver.token
    run_id = devserver.api("POST", "/runs", json={"name": "kept", "folder": "/keep"}).json()["id"]
    artifact_id = store_artifact(devserver, b"persistent bytes")
    devserver.api("PUT", f"/runs/{run_id}/artifacts/{artifact_id}", json={"category": "output"})

    devserver.restart()

    assert devserver.token != old_token
    answer = httpx.get(
        devserver.api_url + "/runs/" + run_id, headers={"Authorization": f"Bearer {old_token}"}
    )
    assert answer.status_code == 200  # same secret: earlier tokens stay valid
    assert answer.json()["name"] == "kept"
    [artifact] = devserver.run_artifacts(run_id, category="output")
    assert httpx.get(artifact["url"]).content == b"persistent bytes"
    folder = devserver.api("POST", "/folders", json={"path": "/keep"})
    assert folder.status_code == 409


def test_seed_is_idempotent(devserver_factory: Factory) -> None:
    server = devserver_factory("--seed", "demo", "--large-size", "1MiB")
    assert server.api("GET", "/runs").json()["count"] == len(RUNS)
    server.restart()
    assert server.api("GET", "/runs").json()["count"] == len(RUNS)


def test_storage_url_points_downloads_at_an_external_blob_server(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(
        "--seed", "demo", "--large-size", "1MiB", "--storage-url", "http://127.0.0.1:9/blobs/"
    )
    run_id = server.run_ids("demo run")[0]
    artifacts = server.run_artifacts(run_id)
    assert artifacts
    for artifact in artifacts:
        base, _, query = artifact["url"].partition("?")
        assert base == f"http://127.0.0.1:9/blobs/{artifact['checksum']}"
        assert "sig=" in query
        # The blob that such a server would serve is the artifact's content.
        assert (server.data_dir / "blobs" / artifact["checksum"]).is_file()


# -- auth ----------------------------------------------------------------------------------


def test_requests_without_valid_token_get_401(devserver: DevServer) -> None:
    secret = bytes.fromhex((devserver.data_dir / "secret").read_text())
    tokens = {
        "not a jwt": "not-a-jwt",
        "foreign": mint_token(b"some other secret key", "devserver"),
        "expired": mint_token(secret, "devserver", lifetime=-10),
        "tampered": devserver.token[:-2] + ("AA" if not devserver.token.endswith("AA") else "BB"),
    }
    refusals = {
        "no header": {},
        "no token": {"Authorization": "Bearer"},
        "basic": {"Authorization": "Basic dXNlcjpwdw=="},
        **{label: {"Authorization": f"Bearer {token}"} for label, token in tokens.items()},
    }
    for path in ("/api/version", "/api/runs", "/admin/stats", "/admin/faults"):
        for label, headers in refusals.items():
            answer = httpx.get(devserver.url + path, headers=headers)
            assert answer.status_code == 401, (path, label)
            assert isinstance(answer.json()["detail"], str)
    expired = httpx.get(devserver.api_url + "/runs", headers=refusals["expired"])
    assert "expired" in expired.json()["detail"]
    assert devserver.api("GET", "/runs").status_code == 200


# -- folders and runs ----------------------------------------------------------------------


def test_folders_conflict_with_existing_id(devserver: DevServer) -> None:
    first = devserver.api("POST", "/folders", json={"path": "/a/b"})
    again = devserver.api("POST", "/folders", json={"path": "/a/b"})
    assert first.status_code == 200
    assert again.status_code == 409
    assert again.json()["id"] == first.json()["id"]
    assert devserver.api("POST", "/folders", json={"path": "relative"}).status_code == 422
    listed = devserver.api("GET", "/folders", params={"filters": '["path == /a/b"]'}).json()
    assert [f["id"] for f in listed["data"]] == [first.json()["id"]]


def test_unknown_routes_answer_json(devserver: DevServer) -> None:
    missing = devserver.api("GET", "/no/such/thing")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong_method = devserver.api("PATCH", "/runs")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["detail"]
    storage = httpx.get(devserver.url + "/storage/nothing")
    assert storage.status_code == 404
    assert "<Error>" in storage.text


def test_run_lifecycle(devserver: DevServer) -> None:
    created = devserver.api(
        "POST", "/runs", json={"folder": "/x", "tags": ["t1"], "status": "running"}
    )
    assert created.status_code == 200
    run = created.json()
    assert NAME_REGEX.match(run["name"])  # generated
    for key in ("created", "started"):
        datetime.strptime(run[key], TS_FORMAT)
    assert run["endtime"] is None

    update = devserver.api("PUT", f"/runs/{run['id']}", json={"status": "completed"})
    assert update.json() == {"id": run["id"]}
    fetched = devserver.api("GET", f"/runs/{run['id']}").json()
    assert (fetched["status"], fetched["tags"], fetched["folder"]) == ("completed", ["t1"], "/x")
    datetime.strptime(fetched["endtime"], TS_FORMAT)

    assert devserver.api("PUT", f"/runs/{run['id']}/heartbeat").json() == {"id": run["id"]}
    assert devserver.api("GET", f"/runs/{run['id']}/abort").json() == {"status": False}
    for path in ("/metrics", "/events"):
        answer = devserver.api(
            "POST", path, content=b"\x82\xa3run", headers={"Content-Type": "application/msgpack"}
        )
        assert answer.json() == {}
    assert devserver.api("GET", "/runs/nosuchrun").status_code == 404
    assert devserver.api("POST", "/runs", json={"name": "bad|name"}).status_code == 422
    invalid = devserver.api("POST", "/runs", json={"name": "x", "status": "weird"}).json()
    assert invalid["detail"][0]["loc"] == ["body", "status"]
    assert devserver.api("DELETE", f"/runs/{run['id']}").status_code == 200
    assert devserver.api("GET", f"/runs/{run['id']}").status_code == 404


def test_pagination_counts_total_and_caps_page(devserver: DevServer) -> None:
    for index in range(105):
        devserver.api("POST", "/runs", json={"name": f"page run {index:03d}", "folder": "/p"})
    first = devserver.api("GET", "/runs", params={"count": 500, "start": 0}).json()
    second = devserver.api("GET", "/runs", params={"count": 100, "start": 100}).json()
    assert (first["count"], len(first["data"])) == (105, 100)
    assert (second["count"], len(second["data"])) == (105, 5)
    names = [r["name"] for r in first["data"] + second["data"]]
    assert names == [f"page run {i:03d}" for i in range(105)]
    newest = devserver.api(
        "GET", "/runs", params={"count": 2, "sorting": json.dumps([{"id": "name", "desc": True}])}
    ).json()
    assert [r["name"] for r in newest["data"]] == ["page run 104", "page run 103"]
    bad_sort = devserver.api("GET", "/runs", params={"sorting": '[{"id": "colour"}]'})
    assert bad_sort.status_code == 400


def filtered(server: DevServer, *filters: str) -> list[str]:
    answer = server.api("GET", "/runs", params={"filters": json.dumps(list(filters))})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == len(body["data"])
    return sorted(run["name"] for run in body["data"])


def test_run_filters(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    assert filtered(server, "name == sweep") == ["sweep", "sweep"]
    assert filtered(server, "name == cfd/mesh-study") == ["cfd/mesh-study"]
    assert filtered(server, "name contains :") == ["scan:2025-03"]
    assert filtered(server, "folder.path == /demo") == ["demo run", "queued run", "v1.2.release"]
    assert filtered(server, "status == running") == ["cfd/mesh-study", "sweep"]
    assert filtered(server, "has tag.cfd") == ["cfd/mesh-study"]
    assert filtered(server, "user == self", "status == failed") == ["scan:2025-03"]
    assert filtered(server, "folder.path == /scans", "status != running") == [
        "scan:2025-03",
        "sweep",
    ]
    assert filtered(server, "metadata.seeded == 1") == sorted(r.name for r in RUNS)
    mesh = artifact_by_name(server, "demo run", "system/mesh.dat")
    assert filtered(server, f"artifact.id == {mesh['id']}") == ["cfd/mesh-study", "demo run"]
    assert filtered(server, "name == no such run") == []
    unsupported = server.api("GET", "/runs", params={"filters": '["colour == blue"]'})
    assert unsupported.status_code == 400
    assert "colour == blue" in unsupported.json()["detail"]
    # requests sends a list as repeated raw parameters (the official ArtifactBase.runs does)
    raw = server.api("GET", "/runs", params=[("filters", f"artifact.id == {mesh['id']}")])
    assert sorted(run["name"] for run in raw.json()["data"]) == ["cfd/mesh-study", "demo run"]
    both = [("filters", "folder.path == /scans"), ("filters", "status != running")]
    assert sorted(r["name"] for r in server.api("GET", "/runs", params=both).json()["data"]) == [
        "scan:2025-03",
        "sweep",
    ]
    assert server.api("GET", "/runs", params={"filters": "not a filter"}).status_code == 400
    assert server.api("GET", "/runs", params={"filters": '{"a": 1}'}).status_code == 422


# -- artifacts -----------------------------------------------------------------------------


ARTIFACT_KEYS = {
    "id",
    "name",
    "original_path",
    "size",
    "mime_type",
    "checksum",
    "url",
    "uploaded",
    "created",
    "category",
    "storage_id",
    "user",
    "metadata",
}


def test_seeded_artifact_listings(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    for seeded, run_id in seeded_runs(server):
        listed = server.run_artifacts(run_id)
        assert [(a["name"], a["category"]) for a in listed] == [
            (ARTIFACTS[key].name, category) for key, category in seeded.artifacts
        ]
        for entry in listed:
            assert set(entry) >= ARTIFACT_KEYS
            datetime.strptime(entry["created"], TS_FORMAT)
    [demo] = server.run_ids("demo run")
    outputs = server.run_artifacts(demo, category="output")
    assert {a["name"] for a in outputs} == {
        ARTIFACTS[k].name for k, c in RUNS[0].artifacts if c == "output"
    }
    summary = next(a for a in outputs if a["name"] == "summary")
    assert summary["original_path"] == ""
    assert summary["size"] == len(artifact_content("summary", 0)) + 33
    assert server.run_artifacts(demo, name="nothing") == []
    assert server.api("GET", f"/runs/{demo}/artifacts", params={"category": "x"}).status_code == 422
    assert server.api("GET", "/runs/nosuchrun/artifacts").status_code == 404

    single = server.api("GET", f"/artifacts/{summary['id']}").json()
    assert ARTIFACT_KEYS - {"category"} <= set(single)
    category = server.api("GET", f"/runs/{demo}/artifacts/{summary['id']}")
    assert category.json() == {"category": "output"}
    [cfd] = server.run_ids("cfd/mesh-study")
    assert server.api("GET", f"/runs/{cfd}/artifacts/{summary['id']}").status_code == 404
    assert server.api("GET", "/artifacts/nosuchartifact").status_code == 404

    in_runs = server.api("GET", "/artifacts", params={"runs": json.dumps([demo, cfd])}).json()
    expected = {ARTIFACTS[k].name for r in RUNS[:2] for k, _ in r.artifacts}
    assert {a["name"] for a in in_runs["data"]} == expected
    assert in_runs["count"] == len(expected)  # the shared mesh and solver appear once


def test_seeded_content_matches_seed_description(seeded_devserver: DevServer) -> None:
    for seeded, run_id in seeded_runs(seeded_devserver):
        entries = seeded_devserver.run_artifacts(run_id)
        for (key, _), entry in zip(seeded.artifacts, entries, strict=True):
            if key == "large":
                continue
            content = httpx.get(entry["url"]).content
            assert content == artifact_content(key, 0)
            assert entry["checksum"] == sha256(content)


def test_create_artifact_validation(devserver: DevServer) -> None:
    good = {
        "name": "a",
        "original_path": "/a",
        "size": 1,
        "mime_type": "text/plain",
        "checksum": "0" * 64,
    }
    for key, value in (("checksum", "abc"), ("checksum", "z" * 64), ("size", -1), ("name", "")):
        answer = devserver.api("POST", "/artifacts", json={**good, key: value})
        assert answer.status_code == 422, (key, value)
    assert devserver.api("POST", "/artifacts", content=b"[1, 2]").status_code == 422
    run_id = devserver.api("POST", "/runs", json={"name": "r"}).json()["id"]
    artifact_id = devserver.api("POST", "/artifacts", json=good).json()["id"]
    attach = f"/runs/{run_id}/artifacts/{artifact_id}"
    assert devserver.api("PUT", attach, json={"category": "misc"}).status_code == 422
    assert devserver.api("PUT", attach, json={"category": "input"}).status_code == 200
    assert devserver.api("PUT", attach, json={"category": "code"}).status_code == 200
    assert devserver.api("GET", attach).json() == {"category": "code"}  # re-attach replaces
    assert (
        devserver.api(
            "PUT", f"/runs/{run_id}/artifacts/nope", json={"category": "code"}
        ).status_code
        == 404
    )


# -- uploads -------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["put", "post"])
def test_upload_styles_store_verified_content(devserver_factory: Factory, style: str) -> None:
    server = devserver_factory("--upload-style", style)
    content = os.urandom(200_000)
    slot = new_artifact(server, content)
    if style == "post":
        assert slot["url"] == server.url + "/storage/uploads"
        assert list(slot["fields"])[:2] == ["key", "x-amz-checksum-sha256"]
        digest = base64.b64decode(slot["fields"]["x-amz-checksum-sha256"])
        assert digest == hashlib.sha256(content).digest()
    else:
        assert "fields" not in slot
        assert "/storage/uploads/" in slot["url"]

    answer = upload(slot, content)

    assert answer.status_code == (204 if style == "post" else 200)
    before = server.api("GET", f"/artifacts/{slot['id']}").json()
    assert before["uploaded"] is False
    assert server.api("PUT", f"/artifacts/{slot['id']}", json={"uploaded": True}).status_code == 200
    after = server.api("GET", f"/artifacts/{slot['id']}").json()
    assert (after["uploaded"], after["name"], after["size"]) == (True, "data.bin", len(content))
    assert httpx.get(after["url"]).content == content
    stats = server.stats()
    assert (stats["uploads"], stats["upload_bytes"]) == (1, len(content))


@pytest.mark.parametrize("style", ["put", "post"])
def test_upload_with_wrong_content_is_bad_digest(devserver_factory: Factory, style: str) -> None:
    server = devserver_factory("--upload-style", style)
    slot = new_artifact(server, b"declared content")

    answer = upload(slot, b"other content")

    assert answer.status_code == 400
    assert BAD_DIGEST in answer.text
    assert not list((server.data_dir / "blobs").glob("[0-9a-f]*"))
    assert not list((server.data_dir / "blobs" / "tmp").iterdir())
    assert upload(slot, b"declared content").status_code in (200, 204)
    assert server.stats()["uploads_rejected"] == 1


@pytest.mark.parametrize("style", ["put", "post"])
def test_upload_url_signature_is_checked(devserver_factory: Factory, style: str) -> None:
    server = devserver_factory("--upload-style", style)
    slot = new_artifact(server, b"x")
    if style == "post":
        slot["fields"]["key"] = "uploads/someotherid"
    else:
        slot["url"] = slot["url"].replace("sig=", "sig=0")
    answer = upload(slot, b"x")
    assert answer.status_code == 403
    assert "<Code>AccessDenied</Code>" in answer.text


@pytest.mark.parametrize("style", ["put", "post"])
def test_300_mib_upload_streams_with_bounded_memory(devserver_factory: Factory, style: str) -> None:
    server = devserver_factory("--upload-style", style)
    assert server.process is not None
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    for _ in range(300):
        digest.update(block)
    slot = server.api(
        "POST",
        "/artifacts",
        json={
            "name": "huge",
            "original_path": "/huge",
            "size": 300 * MIB,
            "mime_type": "application/octet-stream",
            "checksum": digest.hexdigest(),
        },
    ).json()

    answer = upload(slot, (block for _ in range(300)))

    assert answer.status_code in (200, 204), answer.text
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    assert peak_kib < 150 * 1024, f"server peak RSS {peak_kib / 1024:.0f} MiB"
    assert (server.data_dir / "blobs" / digest.hexdigest()).stat().st_size == 300 * MIB


def test_dedup_returns_null_url_for_known_content(devserver_factory: Factory) -> None:
    server = devserver_factory()
    first = store_artifact(server, b"shared content")
    again = new_artifact(server, b"shared content")
    assert again["id"] != first
    assert again["url"] is None
    assert "fields" not in again
    assert server.api("GET", f"/artifacts/{again['id']}").json()["uploaded"] is True

    no_dedup = devserver_factory("--no-dedup")
    store_artifact(no_dedup, b"shared content")
    assert new_artifact(no_dedup, b"shared content")["url"]


# -- downloads -----------------------------------------------------------------------------


def get(url: str, range_header: str | None = None, **headers: str) -> httpx.Response:
    if range_header:
        headers["Range"] = range_header
    return httpx.get(url, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        (f"bytes={MIB - 3}-{MIB + 5}", MIB - 3, MIB + 5),
        (f"bytes={SEEDED_LARGE_SIZE - 10}-", SEEDED_LARGE_SIZE - 10, SEEDED_LARGE_SIZE - 1),
        (
            f"bytes={SEEDED_LARGE_SIZE - 10}-{SEEDED_LARGE_SIZE * 2}",
            SEEDED_LARGE_SIZE - 10,
            SEEDED_LARGE_SIZE - 1,
        ),
        ("bytes=-7", SEEDED_LARGE_SIZE - 7, SEEDED_LARGE_SIZE - 1),
        (f"bytes=-{SEEDED_LARGE_SIZE * 2}", 0, SEEDED_LARGE_SIZE - 1),
    ],
)
def test_range_requests(
    seeded_devserver: DevServer, large: dict[str, Any], header: str, start: int, end: int
) -> None:
    answer = get(large["url"], header)
    assert answer.status_code == 206
    assert answer.headers["content-range"] == f"bytes {start}-{end}/{SEEDED_LARGE_SIZE}"
    assert int(answer.headers["content-length"]) == end - start + 1
    assert answer.content == large_content(start, end - start + 1)


@pytest.mark.parametrize("header", [f"bytes={SEEDED_LARGE_SIZE}-", "bytes=-0"])
def test_unsatisfiable_range_is_416(large: dict[str, Any], header: str) -> None:
    answer = get(large["url"], header)
    assert answer.status_code == 416
    assert answer.headers["content-range"] == f"bytes */{SEEDED_LARGE_SIZE}"


@pytest.mark.parametrize("header", [None, "bytes=5-2", "items=0-1", "bytes=0-1,5-6"])
def test_whole_content_without_usable_range(
    seeded_devserver: DevServer, header: str | None
) -> None:
    results = artifact_by_name(seeded_devserver, "demo run", "results.csv")
    answer = get(results["url"], header, **{"Accept-Encoding": "gzip"})
    assert answer.status_code == 200
    assert answer.content == artifact_content("results", 0)
    assert answer.headers["content-length"] == str(len(answer.content))
    assert "content-encoding" not in answer.headers  # never compressed


def test_head_gives_length_without_body(large: dict[str, Any]) -> None:
    answer = httpx.head(large["url"])
    assert answer.status_code == 200
    assert answer.headers["content-length"] == str(SEEDED_LARGE_SIZE)
    assert answer.headers["accept-ranges"] == "bytes"
    assert answer.content == b""


def test_empty_artifact(seeded_devserver: DevServer) -> None:
    empty = artifact_by_name(seeded_devserver, "demo run", "empty.log")
    answer = get(empty["url"])
    assert (answer.status_code, answer.content) == (200, b"")
    assert get(empty["url"], "bytes=0-").status_code == 416


def test_large_download_counts_bytes_served(
    seeded_devserver: DevServer, large: dict[str, Any]
) -> None:
    seeded_devserver.reset_stats()
    digest = hashlib.sha256()
    with httpx.stream("GET", large["url"], headers={"Accept-Encoding": "identity"}) as answer:
        assert answer.headers["content-length"] == str(SEEDED_LARGE_SIZE)
        for chunk in answer.iter_raw():
            digest.update(chunk)
    assert digest.hexdigest() == large["checksum"]
    get(large["url"], "bytes=10-19")
    stats = seeded_devserver.stats()
    assert stats["bytes_served"] == SEEDED_LARGE_SIZE + 10
    assert (stats["storage_gets"], stats["range_gets"]) == (2, 1)
    assert stats["api_requests"] == {}  # admin calls are not counted


def test_url_expiry_and_refresh(devserver_factory: Factory) -> None:
    server = devserver_factory("--url-expiry", "1")
    artifact_id = store_artifact(server, b"short-lived")
    url = fresh_url(server, artifact_id)
    assert get(url).content == b"short-lived"
    time.sleep(2.1)
    expired = get(url)
    assert expired.status_code == 403
    assert "<Code>AccessDenied</Code>" in expired.text
    assert "expired" in expired.text
    assert get(fresh_url(server, artifact_id)).content == b"short-lived"


def test_url_expiry_fault(seeded_devserver: DevServer) -> None:
    seeded_devserver.set_faults(url_expiry=-1)
    stale = artifact_by_name(seeded_devserver, "demo run", "notes.txt")["url"]
    assert get(stale).status_code == 403
    seeded_devserver.clear_faults()
    fresh = artifact_by_name(seeded_devserver, "demo run", "notes.txt")["url"]
    assert get(fresh).content == artifact_content("notes", 0)


def test_tampered_urls_are_refused(seeded_devserver: DevServer, large: dict[str, Any]) -> None:
    notes = artifact_by_name(seeded_devserver, "demo run", "notes.txt")
    url = large["url"]
    expires = re.search(r"expires=(\d+)", url).group(1)  # type: ignore[union-attr]
    notes_signature = re.search(r"sig=([0-9a-f]+)", notes["url"]).group(1)  # type: ignore[union-attr]
    tampered = [
        url.replace(large["id"], notes["id"]),  # this signature on another artifact
        re.sub(r"sig=[0-9a-f]+", f"sig={notes_signature}", url),  # another artifact's signature
        url.replace(f"expires={expires}", f"expires={int(expires) + 1000}"),
        re.sub(r"sig=[0-9a-f]", "sig=x", url),
        url.split("&sig=")[0],
        url.split("?")[0],
    ]
    for bad in tampered:
        answer = get(bad, "bytes=0-9")
        assert answer.status_code == 403, bad
        assert "<Code>AccessDenied</Code>" in answer.text


# -- faults --------------------------------------------------------------------------------


def test_api_error_count_and_rate(seeded_devserver: DevServer) -> None:
    server = seeded_devserver
    server.reset_stats()  # the session's server: count only this test's faults
    server.set_faults(api_error_status=503, api_error_count=2)
    statuses = [server.api("GET", "/version").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert server.faults()["api_error_count"] == 0
    server.set_faults(api_error_status=502, api_error_rate=1.0)
    answer = server.api("GET", "/runs")
    assert (answer.status_code, answer.json()) == (502, {"detail": "injected fault"})
    # Admin stays reachable (rate 1.0 fails every API request) and counts the 3 injected.
    admin = server.http.get("/admin/stats")
    assert admin.status_code == 200
    assert admin.json()["faults_injected"]["api_error"] == 3
    server.clear_faults()
    assert server.api("GET", "/runs").status_code == 200
    assert server.faults()["api_error_rate"] == 0.0
    server.set_faults(
        api_error_status=500, api_error_count=1, api_error_route="GET /api/runs/{run_id}"
    )
    assert server.api("GET", "/version").status_code == 200
    assert server.api("GET", "/runs/whatever").status_code == 500
    assert server.api("GET", "/runs/whatever").status_code == 404


def test_storage_errors(seeded_devserver: DevServer) -> None:
    url = artifact_by_name(seeded_devserver, "demo run", "notes.txt")["url"]
    seeded_devserver.set_faults(storage_error_status=503, storage_error_count=1)
    failed = get(url)
    assert failed.status_code == 503
    assert "<Error>" in failed.text
    assert get(url).status_code == 200
    assert seeded_devserver.api("GET", "/version").status_code == 200  # API unaffected


@pytest.mark.parametrize("style", ["put", "post"])
def test_refused_upload_still_gets_its_status(devserver_factory: Factory, style: str) -> None:
    """The body is read before refusing, so a client still sending sees the status."""
    server = devserver_factory("--upload-style", style)
    content = os.urandom(8 * MIB)
    slot = new_artifact(server, content)
    server.set_faults(storage_error_status=503, storage_error_count=1)
    assert upload(slot, content).status_code == 503
    assert upload(slot, content).status_code in (200, 204)
    assert server.stats()["uploads"] == 1


def test_client_going_away_mid_download(seeded_devserver: DevServer, large: dict[str, Any]) -> None:
    """The server stops reading the blob when the client disconnects (uvicorn would
    otherwise accept and drop every further chunk, counting them as served)."""
    seeded_devserver.reset_stats()
    with httpx.stream("GET", large["url"]) as answer:
        next(answer.iter_raw())
    time.sleep(1.0)
    assert seeded_devserver.stats()["bytes_served"] < SEEDED_LARGE_SIZE // 2
    assert get(large["url"], "bytes=0-9").content == large_content(0, 10)


def test_ignore_range(seeded_devserver: DevServer) -> None:
    results = artifact_by_name(seeded_devserver, "demo run", "results.csv")
    seeded_devserver.set_faults(ignore_range=True)
    answer = get(results["url"], "bytes=5-9")
    assert answer.status_code == 200
    assert answer.content == artifact_content("results", 0)


@pytest.mark.parametrize("where", ["api", "storage_before"])
def test_stall_before_answer(seeded_devserver: DevServer, where: str) -> None:
    url = artifact_by_name(seeded_devserver, "demo run", "notes.txt")["url"]
    seeded_devserver.set_faults(stall_seconds=0.6, stall_where=where)
    began = time.perf_counter()
    if where == "api":
        seeded_devserver.api("GET", "/version")
    else:
        get(url)
    assert time.perf_counter() - began >= 0.6  # a lower bound: the server sleeps that long


def test_stall_in_the_middle_of_a_body(seeded_devserver: DevServer, large: dict[str, Any]) -> None:
    seeded_devserver.set_faults(stall_seconds=1.0, stall_where="storage_middle")
    arrivals: list[tuple[float, int]] = []  # (when a chunk arrived, the bytes before it)
    received = 0
    began = time.perf_counter()
    with httpx.stream("GET", large["url"], headers={"Range": f"bytes=0-{4 * MIB - 1}"}) as answer:
        for chunk in answer.iter_raw():
            arrivals.append((time.perf_counter(), received))
            received += len(chunk)
    total = time.perf_counter() - began
    assert received == 4 * MIB
    assert total >= 1.0  # a lower bound: the server sleeps that long
    # The pause falls after exactly half of the body: the longest gap between two chunks
    # (a one-second sleep against the gaps of a loopback stream) is the one before byte 2 MiB.
    gaps = [(later - earlier, before) for (earlier, _), (later, before) in pairwise(arrivals)]
    assert max(gaps)[1] == 2 * MIB


def test_drop_after_bytes(seeded_devserver: DevServer, large: dict[str, Any]) -> None:
    seeded_devserver.reset_stats()
    seeded_devserver.set_faults(drop_after_bytes=100_000)
    received = bytearray()
    with (  # noqa: PT012
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", large["url"], headers={"Range": "bytes=1000-"}) as answer,
    ):
        assert answer.status_code == 206
        for chunk in answer.iter_raw():
            received += chunk
    assert bytes(received) == large_content(1000, 100_000)
    assert seeded_devserver.stats()["bytes_served"] == 100_000
    small = get(large["url"], "bytes=0-99")  # shorter than the limit: not dropped
    assert small.content == large_content(0, 100)
    assert "Traceback" not in seeded_devserver.log()


def test_fault_validation(seeded_devserver: DevServer) -> None:
    http = seeded_devserver.http
    for body in (
        {"no_such": 1},
        {"api_error_status": "503"},
        {"ignore_range": 1},
        {"stall_where": "nowhere"},
        {"api_error_rate": 2},
        {"drop_after_bytes": -1},
    ):
        answer = http.put("/admin/faults", json=body)
        assert answer.status_code == 400, body
        assert answer.json()["detail"]
    assert seeded_devserver.faults() == http.put("/admin/faults", json={}).json()
    assert all(not value for value in seeded_devserver.faults().values())


def test_faults_from_the_command_line(devserver_factory: Factory) -> None:
    server = devserver_factory(
        "--fault",
        "api_error_status=503",
        "--fault",
        "api_error_count=1",
        "--fault",
        "ignore_range=true",
    )
    assert server.faults()["ignore_range"] is True
    assert server.api("GET", "/version").status_code == 503
    assert server.api("GET", "/version").status_code == 200

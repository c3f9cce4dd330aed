"""The devserver's newer fault switches over plain HTTP: each misbehaves exactly as documented,
and only while it is on.

Tokens (expiry, revocation), uploads refused with BadDigest, corrupted content, slow listings,
synthetic runs and artifacts, malformed JSON, and the switches' validation. The older
switches (API and storage errors, stalls, dropped connections, ignored ranges) are checked in
``test_devserver.py``; what a mount does under all of them is ``tests/mount/test_faults.py``.

Every server here is private to its test (``devserver``/``devserver_factory``), so switches
never leak into other tests.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from helpers import create_artifact, new_run, send_content, sha256, store_artifact

from testbed.devserver import DevServer

Factory = Callable[..., DevServer]

MIB = 1024 * 1024


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
    record = store_artifact(devserver, new_run(devserver, "faulty"), "data.bin", content)
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
    run_id = new_run(devserver, "faulty")
    devserver.set_faults(listing_delay=0.5)
    for path, delayed in (
        ("/runs", True),
        (f"/runs/{run_id}/artifacts", True),
        (f"/runs/{run_id}", False),
        ("/version", False),
    ):
        before = devserver.stats()["faults_injected"].get("listing_delay", 0)
        began = time.monotonic()
        devserver.api("GET", path).raise_for_status()
        took = time.monotonic() - began
        after = devserver.stats()["faults_injected"].get("listing_delay", 0)
        assert after - before == (1 if delayed else 0), path
        if delayed:  # a lower bound: the server sleeps that long, however fast the machine
            assert took >= 0.5, (path, took)


def test_wan_switches_delay_every_request_and_pace_uploads(devserver: DevServer) -> None:
    run_id = new_run(devserver, "wan")
    devserver.set_faults(request_delay=0.2, upload_bandwidth=MIB)
    devserver.reset_stats()
    began = time.monotonic()
    devserver.api("GET", f"/runs/{run_id}").raise_for_status()
    assert time.monotonic() - began >= 0.2  # a lower bound: the server sleeps that long
    content = os.urandom(MIB + MIB // 2)
    created = create_artifact(devserver, "paced.bin", content)
    began = time.monotonic()
    assert send_content(created, content).status_code in (200, 204)
    assert time.monotonic() - began >= 1.5  # 1.5 MiB at 1 MiB/s, whatever the machine
    injected = devserver.stats()["faults_injected"]
    assert (injected["request_delay"], injected["upload_bandwidth"]) == (3, 1)
    devserver.clear_faults()
    devserver.reset_stats()
    devserver.api("GET", f"/runs/{run_id}").raise_for_status()
    assert devserver.stats()["faults_injected"] == {}


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
        {"request_delay": -0.1},
        {"upload_bandwidth": 1.5},
    ):
        answer = devserver.http.put("/admin/faults", json=body)
        assert answer.status_code == 400, body
    assert not any(devserver.faults().values())
    assert devserver.http.post("/admin/tokens", json={"lifetime": 0}).status_code == 422

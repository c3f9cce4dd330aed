"""The devserver's refusal switches over plain HTTP: an outage (``unavailable_seconds``: 503
for a while) and rate limits (``rate_limit_*``: 429 with ``Retry-After`` in seconds or as an
HTTP date), for the API and storage, answered before authentication and routing
(``devserver/gate.py``), never for admin routes, and uploads refused only after their body.

What a mount does under them is ``tests/mount/test_outages.py``.
"""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
from helpers import new_run, send_content, sha256, store_artifact

from testbed.devserver import DevServer
from testbed.processes import wait_until


def download_url(server: DevServer, run_id: str) -> str:
    (artifact,) = server.run_artifacts(run_id)
    url: str = artifact["url"]
    return url


def test_an_outage_answers_503_for_its_duration_then_ends(devserver: DevServer) -> None:
    run_id = new_run(devserver, "r")
    store_artifact(devserver, run_id, "a.txt", b"hello")
    url = download_url(devserver, run_id)
    # A window far longer than the test: every request inside it is refused.
    devserver.set_faults(unavailable_seconds=3600)
    api = devserver.api("GET", "/runs")
    storage = httpx.get(url)
    unauthenticated = httpx.get(devserver.api_url + "/version")  # refused before the token
    assert (api.status_code, api.json()) == (
        503,
        {"detail": "Service unavailable (injected outage)"},
    )
    assert storage.status_code == 503
    assert b"<Code>ServiceUnavailable</Code>" in storage.content
    assert unauthenticated.status_code == 503
    assert devserver.faults()["unavailable_seconds"] == 3600  # admin routes still answer
    assert devserver.stats()["faults_injected"]["unavailable"] == 3
    # Setting the switch again restarts the window from now: 0 ends the outage.
    devserver.set_faults(unavailable_seconds=0)
    assert devserver.api("GET", "/runs").status_code == 200
    assert httpx.get(url).content == b"hello"
    # A short window ends by itself.
    devserver.set_faults(unavailable_seconds=0.5)
    assert wait_until(lambda: devserver.api("GET", "/runs").status_code == 200, timeout=30)
    assert httpx.get(url).content == b"hello"


def test_rate_limit_answers_429_with_retry_after_seconds(devserver: DevServer) -> None:
    run_id = new_run(devserver, "r")
    store_artifact(devserver, run_id, "a.txt", b"hello")
    url = download_url(devserver, run_id)
    devserver.set_faults(rate_limit_count=2, rate_limit_retry_after=2.5)
    api = devserver.api("GET", "/runs")
    assert api.status_code == 429
    assert api.headers["Retry-After"] == "2.5"
    assert api.json() == {"detail": "Too many requests (injected)"}
    storage = httpx.get(url)
    assert storage.status_code == 429
    assert storage.headers["Retry-After"] == "2.5"
    assert b"<Code>TooManyRequests</Code>" in storage.content
    assert devserver.api("GET", "/runs").status_code == 200  # the count is used up
    assert devserver.stats()["faults_injected"]["rate_limit"] == 2


def test_rate_limit_retry_after_as_an_http_date(devserver: DevServer) -> None:
    devserver.set_faults(rate_limit_count=1, rate_limit_retry_after=30, rate_limit_date=True)
    before = time.time()
    answer = devserver.api("GET", "/runs")
    assert answer.status_code == 429
    when = email.utils.parsedate_to_datetime(answer.headers["Retry-After"]).timestamp()
    assert before + 29 <= when <= time.time() + 31


def test_rate_limit_without_retry_after_and_limited_to_one_side(devserver: DevServer) -> None:
    run_id = new_run(devserver, "r")
    store_artifact(devserver, run_id, "a.txt", b"hello")
    url = download_url(devserver, run_id)
    devserver.set_faults(rate_limit_count=5, rate_limit_where="storage")
    assert devserver.api("GET", "/runs").status_code == 200  # the API is not limited
    answer = httpx.get(url)
    assert answer.status_code == 429
    assert "Retry-After" not in answer.headers
    devserver.set_faults(rate_limit_count=5, rate_limit_where="api")
    assert httpx.get(url).content == b"hello"
    assert devserver.api("GET", "/runs").status_code == 429
    assert devserver.stats()["faults_injected"]["rate_limit"] == 2


def test_a_refused_upload_gets_the_answer_after_its_body(devserver: DevServer) -> None:
    content = b"x" * (8 * 1024 * 1024)
    slot = devserver.api(
        "POST",
        "/artifacts",
        json={
            "name": "big.bin",
            "original_path": "/work/big.bin",
            "size": len(content),
            "mime_type": "application/octet-stream",
            "checksum": sha256(content),
            "metadata": None,
        },
    ).json()
    devserver.set_faults(rate_limit_count=1, rate_limit_where="storage", rate_limit_retry_after=1)
    refused = send_content(slot, content)  # a broken connection would raise here
    assert (refused.status_code, refused.headers["Retry-After"]) == (429, "1")
    assert devserver.stats()["uploads"] == 0
    assert send_content(slot, content).status_code in (200, 204)
    assert devserver.stats()["uploads"] == 1


@pytest.mark.parametrize(
    ("switch", "value", "message"),
    [
        ("rate_limit_where", "admin", "rate_limit_where must be one of api, storage"),
        ("rate_limit_rate", 1.5, "must be between 0 and 1"),
        ("unavailable_seconds", -1.0, "must not be negative"),
    ],
)
def test_refusal_switches_are_validated(
    devserver: DevServer, switch: str, value: object, message: str
) -> None:
    answer = devserver.http.put("/admin/faults", json={switch: value})
    assert answer.status_code == 400
    assert message in answer.text

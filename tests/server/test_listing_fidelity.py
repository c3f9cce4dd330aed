"""The devserver's listings as the real server is believed to answer them (``--realistic``)
and the switches ``page_size`` and ``chunked_no_length``, over HTTP.

What simvuefs makes of them is tested in ``test_client.py`` (the client) and
``tests/mount/test_listing_pages.py`` (mounts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from helpers import new_run, store_artifact

from testbed.devserver import DevServer

# What the official Client.get_runs sends besides filters and paging (protocol 8.2 (c)).
OFFICIAL_FLAGS = {
    "return_basic": "True",
    "return_system": "False",
    "return_timing": "False",
    "return_metrics": "False",
    "return_alerts": "False",
    "return_metadata": "False",
}


def _runs(server: DevServer, **params: Any) -> dict[str, Any]:
    answer = server.api("GET", "/runs", params=params)
    answer.raise_for_status()
    page: dict[str, Any] = answer.json()
    return page


def _make(server: DevServer, count: int) -> list[str]:
    """Create *count* runs with metadata and system info; their names, oldest first."""
    names = [f"r{index:02d}" for index in range(count)]
    for name in names:
        body = {"name": name, "folder": "/f", "metadata": {"k": name}, "system": {"cwd": "/"}}
        server.api("POST", "/runs", json=body).raise_for_status()
    return names


def test_realistic_entries_hold_the_fields_asked_for(
    devserver_factory: Callable[..., DevServer],
) -> None:
    server = devserver_factory("--realistic")
    _make(server, 2)
    basic_fields = {"id", "name", "folder", "status", "created", "tags", "user"}
    for params in ({}, OFFICIAL_FLAGS):  # simvue-cli sends no flag, the official client all
        for entry in _runs(server, **params)["data"]:
            assert basic_fields <= set(entry)
            assert not {"metadata", "system"} & set(entry)
    with_metadata = _runs(server, **{**OFFICIAL_FLAGS, "return_metadata": "True"})["data"]
    assert {entry["metadata"]["k"] for entry in with_metadata} == {"r00", "r01"}
    assert "system" not in with_metadata[0]
    (only_system, _) = _runs(server, return_basic="False", return_system="true")["data"]
    assert set(only_system) == {"id", "system"}
    (run_id,) = server.run_ids("r00")  # single runs are whole, as the official client reads them
    assert server.api("GET", f"/runs/{run_id}").json()["metadata"] == {"k": "r00"}


def test_default_listings_are_whole_and_oldest_first(devserver: DevServer) -> None:
    names = _make(devserver, 3)
    data = _runs(devserver)["data"]
    assert [entry["name"] for entry in data] == names
    assert all({"metadata", "system", "name"} <= set(entry) for entry in data)


def test_realistic_order_is_newest_first_unless_sorted(
    devserver_factory: Callable[..., DevServer],
) -> None:
    server = devserver_factory("--realistic")
    names = _make(server, 4)

    def order(**params: str) -> list[str]:
        return [entry["name"] for entry in _runs(server, return_basic="True", **params)["data"]]

    assert order() == names[::-1]
    assert order(sorting=json.dumps([{"id": "created", "desc": False}])) == names
    assert order(sorting=json.dumps([{"id": "name", "desc": True}])) == names[::-1]


def test_page_size_caps_run_and_artifact_pages(devserver: DevServer) -> None:
    names = _make(devserver, 10)
    store_artifact(devserver, devserver.run_ids("r00")[0], "a.txt", b"a")
    store_artifact(devserver, devserver.run_ids("r01")[0], "b.txt", b"b")
    devserver.set_faults(page_size=4)
    page = _runs(devserver, count="100", start="8")
    assert ([entry["name"] for entry in page["data"]], page["count"]) == (names[8:], 10)
    assert len(_runs(devserver, count="3")["data"]) == 3  # smaller asks are kept
    devserver.set_faults(page_size=1)
    artifacts = devserver.api("GET", "/artifacts", params={"count": "50"}).json()
    assert (len(artifacts["data"]), artifacts["count"]) == (1, 2)
    assert devserver.stats()["faults_injected"]["page_size"] == 2


def test_realistic_pages_hold_at_most_100(devserver_factory: Callable[..., DevServer]) -> None:
    server = devserver_factory("--realistic", "--fault", "extra_runs=250")
    page = _runs(server, count="1000", return_basic="True")
    assert (len(page["data"]), page["count"]) == (100, 250)


def test_chunked_no_length_sends_the_whole_body_without_a_length(devserver: DevServer) -> None:
    content = bytes(range(256)) * 1000
    record = store_artifact(devserver, new_run(devserver, "chunks"), "data.bin", content)
    devserver.set_faults(chunked_no_length=True)
    answer = httpx.get(record["url"], headers={"Range": "bytes=10-19"}, timeout=30)
    assert answer.status_code == 200
    assert answer.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in answer.headers
    assert "accept-ranges" not in answer.headers
    assert answer.content == content
    devserver.clear_faults()
    answer = httpx.get(record["url"], headers={"Range": "bytes=10-19"}, timeout=30)
    assert (answer.status_code, answer.content) == (206, content[10:20])

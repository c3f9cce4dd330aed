"""The OFFICIAL simvue 2.6.2 client, unchanged, against the devserver over real HTTP.

Every test runs against both devserver modes (the ``mode`` fixture): the lenient default
and ``--realistic`` (behave as the real server is believed to, docs/compatibility.md). A
realistic behaviour that breaks the official client, or simvue-cli's use of its objects,
contradicts what is believed of the real server, which works with both.

Each scenario runs in a subprocess (``tests/official_client.py``) because the client caches
its configuration and server version per process and starts background threads. The
subprocess gets ``SIMVUE_URL``/``SIMVUE_TOKEN`` from the devserver, a private HOME and
offline directory, and a temporary working directory. The tests then check the result both
through the client (downloads compared byte for byte) and through the devserver's API and
counters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from devserver_util import SEEDED_LARGE_SIZE
from helpers import new_run, sha256
from official_util import OfficialClient

from simvuefs.devserver.seed import ARTIFACTS, RUNS, artifact_content
from testbed.devserver import DevServer

MODES = {"default": (), "realistic": ("--realistic",)}
"""Devserver options of each mode the tests run against."""


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The devserver options of one mode: none (default) or ``--realistic``."""
    options: tuple[str, ...] = MODES[request.param]
    return options


@pytest.fixture
def server(devserver_factory: Any, mode: tuple[str, ...]) -> DevServer:
    """A fresh, empty devserver in *mode*."""
    started: DevServer = devserver_factory(*mode)
    return started


@pytest.fixture
def seeded_server(
    request: pytest.FixtureRequest, devserver_factory: Any, mode: tuple[str, ...]
) -> DevServer:
    """A devserver seeded with ``--seed demo`` in *mode* (the session's for the default)."""
    if not mode:
        shared: DevServer = request.getfixturevalue("seeded_devserver")
        return shared
    seeded: DevServer = devserver_factory(
        "--seed", "demo", "--large-size", str(SEEDED_LARGE_SIZE), *mode
    )
    return seeded


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def write_files(workdir: Path) -> dict[str, bytes]:
    """Create the files the scenarios save; return {relative path: content}."""
    files = {
        "in.txt": b"input parameters\nalpha = 1\n",
        "table.csv": b"x,y\n1,2\n3,4\n",
        "empty.log": b"",
        "big.bin": os.urandom(3 * 1024 * 1024 + 17),
        "src/solver.py": b"print('solving')\n",
        "case/mesh.dat": b"mesh " * 1000,
    }
    for name, content in files.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


# (local file, category, explicit name or None) -> name on the server
SAVED_FILES = [
    ("in.txt", "input", None, "in.txt"),
    ("case/mesh.dat", "input", "system/mesh.dat", "system/mesh.dat"),
    ("table.csv", "output", None, "table.csv"),
    ("empty.log", "output", None, "empty.log"),
    ("big.bin", "output", None, "big.bin"),
    ("src/solver.py", "code", "src/solver.py", "src/solver.py"),
]
OBJECTS = [
    ({"converged": True, "n": 3}, "output", "summary"),
    ({"numpy": [1.5, 2.5]}, "output", "arr"),
]


def expected_by_category(files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    by_category: dict[str, dict[str, str]] = {"input": {}, "output": {}, "code": {}}
    for local, category, _, name in SAVED_FILES:
        by_category[category][name] = sha256(files[local])
    return by_category


@pytest.mark.parametrize("upload_style", ["put", "post"])
def test_run_save_files_and_objects_then_download(
    devserver_factory: Any, mode: tuple[str, ...], workdir: Path, upload_style: str
) -> None:
    server: DevServer = devserver_factory("--upload-style", upload_style, *mode)
    client = OfficialClient(server, workdir)
    files = write_files(workdir)
    created = client.create_run(
        name="conformance run",
        folder="/conformance/sub",
        files=[[local, category, name] for local, category, name, _ in SAVED_FILES],
        objects=[list(o) for o in OBJECTS],
    )

    run = server.api("GET", f"/runs/{created['id']}").json()
    assert (run["name"], run["folder"], run["status"]) == (
        "conformance run",
        "/conformance/sub",
        "completed",
    )
    assert run["tags"] == ["conformance"]
    assert run["endtime"]
    listed = {a["name"]: a for a in server.run_artifacts(created["id"])}
    expected = expected_by_category(files)
    for category, names in expected.items():
        for name, digest in names.items():
            assert listed[name]["category"] == category
            assert listed[name]["checksum"] == digest
            assert listed[name]["uploaded"] is True
    summary = json.dumps(OBJECTS[0][0]).encode()
    assert listed["summary"]["original_path"] == ""
    assert listed["summary"]["size"] == len(summary) + 33
    assert listed["summary"]["mime_type"] == "application/json"
    assert listed["arr"]["mime_type"] == "application/vnd.simvue.numpy.v1"
    stats = server.stats()
    assert stats["uploads"] == len(SAVED_FILES) + len(OBJECTS)
    assert stats["upload_bytes"] >= sum(len(c) for c in files.values())

    downloaded = client.call(
        "download",
        run_id=created["id"],
        output_dir=str(workdir / "downloads"),
        names=["in.txt", "system/mesh.dat", "empty.log", "big.bin"],
        categories=["input", "output", "code", None],
        objects=["summary", "arr"],
    )
    for name in ["in.txt", "system/mesh.dat", "empty.log", "big.bin"]:
        digest = listed[name]["checksum"]
        assert downloaded["single"][name] == {name: digest}
    for category in ("input", "code"):
        assert downloaded["categories"][category] == expected[category]
    outputs = downloaded["categories"]["output"]
    assert {k: v for k, v in outputs.items() if k in expected["output"]} == expected["output"]
    assert outputs["summary"] == sha256(summary)
    everything = {name: d for names in expected.values() for name, d in names.items()}
    assert {k: v for k, v in downloaded["categories"]["None"].items() if k in everything} == (
        everything
    )
    assert set(downloaded["categories"]["None"]) == set(everything) | {"summary", "arr"}
    assert downloaded["objects"] == {"summary": OBJECTS[0][0], "arr": [1.5, 2.5]}
    assert downloaded["run"] == {
        "name": "conformance run",
        "status": "completed",
        "folder": "/conformance/sub",
    }
    assert server.stats()["uploads"] == stats["uploads"]  # downloads upload nothing


def test_same_file_in_two_runs_is_uploaded_once(server: DevServer, workdir: Path) -> None:
    client = OfficialClient(server, workdir)
    write_files(workdir)
    first, second = client.call(
        "create_runs",
        runs=[
            {"name": "twin", "files": [["table.csv", "output", None]]},
            {"name": "twin", "files": [["table.csv", "input", None]]},
        ],
    )

    assert server.stats()["uploads"] == 1
    assert server.run_ids("twin") == [first["id"], second["id"]]
    [in_first] = server.run_artifacts(first["id"])
    [in_second] = server.run_artifacts(second["id"])
    assert in_first["id"] != in_second["id"]
    assert in_first["checksum"] == in_second["checksum"]
    assert (in_first["category"], in_second["category"]) == ("output", "input")
    downloaded = client.call(
        "download", run_id=second["id"], output_dir=str(workdir / "dl"), names=["table.csv"]
    )
    assert downloaded["single"]["table.csv"] == {"table.csv": sha256(b"x,y\n1,2\n3,4\n")}


def test_file_artifact_new_attached_to_two_runs(server: DevServer, workdir: Path) -> None:
    client = OfficialClient(server, workdir)
    files = write_files(workdir)
    run_a, run_b = (
        server.api("POST", "/runs", json={"name": name, "folder": "/owners"}).json()["id"]
        for name in ("owner a", "owner b")
    )

    artifact = client.call(
        "attach_file_artifact",
        name="shared/mesh.dat",
        path=str(workdir / "case/mesh.dat"),
        attach=[[run_a, "input"], [run_b, "output"]],
    )

    assert artifact["name"] == "shared/mesh.dat"
    for run_id, category in ((run_a, "input"), (run_b, "output")):
        answer = server.api("GET", f"/runs/{run_id}/artifacts/{artifact['id']}")
        assert answer.json() == {"category": category}
        [entry] = server.run_artifacts(run_id, category=category)
        assert entry["id"] == artifact["id"]
        assert entry["metadata"] == {"origin": "conformance"}
    owners = server.api(
        "GET", "/runs", params={"filters": json.dumps([f"artifact.id == {artifact['id']}"])}
    ).json()
    assert sorted(r["id"] for r in owners["data"]) == sorted([run_a, run_b])
    downloaded = client.call(
        "download", run_id=run_b, output_dir=str(workdir / "dl"), categories=["output"]
    )
    assert downloaded["categories"]["output"] == {"shared/mesh.dat": sha256(files["case/mesh.dat"])}


def test_offline_run_uploaded_by_sender(server: DevServer, workdir: Path) -> None:
    client = OfficialClient(server, workdir)
    files = write_files(workdir)
    offline = client.create_run(
        mode="offline",
        name="offline run",
        folder="/offline",
        files=[["in.txt", "input", None], ["big.bin", "output", "data/big.bin"]],
        objects=[[{"offline": True}, "output", "state"]],
    )
    assert offline["id"].startswith("offline_")
    assert server.stats()["api_requests"] == {}  # offline mode makes no requests

    sent = client.call("send_offline")

    run_id = sent["id_mapping"][offline["id"]]
    run = server.api("GET", f"/runs/{run_id}").json()
    assert (run["name"], run["folder"], run["status"]) == ("offline run", "/offline", "completed")
    assert run["started"]
    assert run["endtime"]
    downloaded = client.call(
        "download",
        run_name="offline run",
        output_dir=str(workdir / "dl"),
        categories=[None],
        objects=["state"],
    )
    assert downloaded["run_id"] == run_id
    tree = downloaded["categories"]["None"]
    assert tree["in.txt"] == sha256(files["in.txt"])
    assert tree["data/big.bin"] == sha256(files["big.bin"])
    assert downloaded["objects"]["state"] == {"offline": True}
    assert server.stats()["uploads"] == 3


def test_changed_file_is_rejected_with_bad_digest(server: DevServer, workdir: Path) -> None:
    """As python-api's test_file_artifact_creation_offline_updated: the file changes between
    registration (offline) and sending, so storage refuses it with S3's BadDigest."""
    client = OfficialClient(server, workdir)
    write_files(workdir)
    client.create_run(mode="offline", name="changing", files=[["in.txt", "input", None]])
    (workdir / "in.txt").write_bytes(b"changed after registration\n")

    output = client.call("send_offline", expect_failure=True)

    assert "The SHA256 you specified did not match the calculated checksum." in output
    stats = server.stats()
    assert (stats["uploads"], stats["uploads_rejected"]) == (0, 1)


def test_official_client_reads_seeded_demo(seeded_server: DevServer, workdir: Path) -> None:
    client = OfficialClient(seeded_server, workdir)
    demo = next(run for run in RUNS if run.name == "demo run")
    [run_id] = seeded_server.run_ids("demo run")

    downloaded = client.call(
        "download",
        run_id=run_id,
        output_dir=str(workdir / "dl"),
        names=["system/mesh.dat", "large.bin"],
        categories=["input", "output", "code", None],
        objects=["summary", "spectrum", "results.csv"],
    )

    expected = {
        ARTIFACTS[key].name: sha256(artifact_content(key, SEEDED_LARGE_SIZE))
        for key, _ in demo.artifacts
    }
    assert downloaded["categories"]["None"] == expected
    for category in ("input", "output", "code"):
        names = {ARTIFACTS[k].name for k, c in demo.artifacts if c == category}
        assert downloaded["categories"][category] == {n: expected[n] for n in names}
    assert downloaded["single"]["large.bin"] == {"large.bin": expected["large.bin"]}
    assert downloaded["objects"]["summary"] == json.loads(artifact_content("summary", 0))
    assert downloaded["objects"]["spectrum"] == [0.5, 1.5, 2.5, 3.5]
    assert downloaded["objects"]["results.csv"] == {"sha256": expected["results.csv"]}
    assert downloaded["run"] == {"name": "demo run", "status": "completed", "folder": "/demo"}


PAGED_RUNS = 130
"""More runs than one page of the official client (100) and of any smaller server cap."""


def test_official_listing_sees_every_run_across_pages(server: DevServer, workdir: Path) -> None:
    """Client.get_runs pages with count=100 and start += 100 whatever a page held
    (api/request.py get_paginated): a server that caps pages below 100 makes it skip runs,
    so the real server's cap cannot be below the client's page size."""
    paged = {new_run(server, f"paged {i:03d}", folder="/paging"): i for i in range(PAGED_RUNS)}
    others = {new_run(server, f"other {i}", folder="/elsewhere") for i in range(3)}
    client = OfficialClient(server, workdir)

    everything = client.call("list_runs")
    in_folder = client.call("list_runs", filters=["folder.path == /paging"])

    for key in ("all", "own"):
        assert sorted(run["id"] for run in everything[key]) == sorted([*paged, *others])
        assert sorted(run["id"] for run in in_folder[key]) == sorted(paged)
    for run in in_folder["all"]:
        assert run["name"] == f"paged {paged[run['id']]:03d}"
        assert (run["folder"], run["status"]) == ("/paging", "running")


def test_cli_run_list_reads_fields_without_return_flags(server: DevServer, workdir: Path) -> None:
    """simvue-cli's ``run list`` sends no return_* flags and reads name, folder, status and
    created of every entry (a missing one is a KeyError there): a server must send them
    unless the client says return_basic=False."""
    names = [f"cli {i:02d}" for i in range(25)]
    for name in names:
        new_run(server, name, folder="/cli")

    rows = OfficialClient(server, workdir).call("cli_list_runs", count=20)

    assert [row["name"] for row in rows] == names[::-1][:20]  # the 20 newest, newest first
    assert {(row["folder"], row["status"]) for row in rows} == {("/cli", "running")}
    assert all(row["created"] != "None" for row in rows)


def test_official_delete_keeps_content_shared_by_checksum(server: DevServer, workdir: Path) -> None:
    """FileArtifact.delete() (``DELETE /api/artifacts/{id}``) of one run's artifact: the other
    run's artifact with the same content (stored once) still downloads. What the REAL server
    does here is unconfirmed (docs/compatibility.md, deletes)."""
    client = OfficialClient(server, workdir)
    files = write_files(workdir)
    first, second = client.call(
        "create_runs",
        runs=[
            {"name": "keeps", "files": [["table.csv", "output", None]]},
            {"name": "deletes", "files": [["table.csv", "output", None]]},
        ],
    )
    [kept] = server.run_artifacts(first["id"])

    deleted = client.call("delete_artifact", run_id=second["id"], name="table.csv")

    assert deleted["id"] != kept["id"]
    assert server.api("GET", f"/artifacts/{deleted['id']}").status_code == 404
    assert server.run_artifacts(second["id"]) == []
    [still] = server.run_artifacts(first["id"])
    assert still["id"] == kept["id"]
    downloaded = client.call(
        "download", run_id=first["id"], output_dir=str(workdir / "dl"), names=["table.csv"]
    )
    assert downloaded["single"]["table.csv"] == {"table.csv": sha256(files["table.csv"])}


def user_token(server: DevServer, user: str, tenant: str | None = None) -> str:
    """Return a token for *user* (moved to *tenant* if given) from ``POST /admin/tokens``."""
    body: dict[str, Any] = {"user": user, "lifetime": 3600}
    if tenant is not None:
        body["tenant"] = tenant
    answer = server.http.post("/admin/tokens", json=body)
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def test_visibility_set_by_the_client_decides_who_lists_a_run(
    server: DevServer, workdir: Path
) -> None:
    """Run.init(visibility=...) as the client sends it (``{"tenant", "public", "users"}``)
    decides who lists the run with Client.get_runs; show_shared=False (``user == self``)
    lists only one's own; attaching to a run one may only see fails in the client."""
    owner = OfficialClient(server, workdir / "owner")
    created = owner.call(
        "create_runs",
        runs=[
            {"name": "private"},
            {"name": "for bob", "visibility": ["bob"]},
            {"name": "tenant-wide", "visibility": "tenant"},
            {"name": "public", "visibility": "public"},
        ],
    )
    ids = {run["name"]: run["id"] for run in created}
    bob = OfficialClient(server, workdir / "bob", token=user_token(server, "bob"))
    carol = OfficialClient(
        server, workdir / "carol", token=user_token(server, "carol", tenant="elsewhere")
    )
    (workdir / "bob" / "in.txt").write_bytes(b"from bob\n")

    def names(client: OfficialClient) -> dict[str, set[str]]:
        listed = client.call("list_runs")
        return {key: {run["name"] for run in runs} for key, runs in listed.items()}

    assert names(owner) == {"all": set(ids), "own": set(ids)}
    assert names(bob) == {"all": {"for bob", "tenant-wide", "public"}, "own": set()}
    assert names(carol) == {"all": {"public"}, "own": set()}
    refused = bob.call(
        "attach_file_artifact",
        expect_failure=True,
        name="in.txt",
        path=str(workdir / "bob" / "in.txt"),
        attach=[[ids["for bob"], "input"]],
    )
    assert "status 403" in refused
    assert server.run_artifacts(ids["for bob"]) == []

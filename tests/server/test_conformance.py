"""The OFFICIAL simvue 2.6.2 client, unchanged, against the devserver over real HTTP.

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
from helpers import sha256
from official_util import OfficialClient

from simvuefs.devserver.seed import ARTIFACTS, RUNS, artifact_content
from testbed.devserver import DevServer


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
    devserver_factory: Any, workdir: Path, upload_style: str
) -> None:
    server: DevServer = devserver_factory("--upload-style", upload_style)
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


def test_same_file_in_two_runs_is_uploaded_once(devserver: DevServer, workdir: Path) -> None:
    client = OfficialClient(devserver, workdir)
    write_files(workdir)
    first, second = client.call(
        "create_runs",
        runs=[
            {"name": "twin", "files": [["table.csv", "output", None]]},
            {"name": "twin", "files": [["table.csv", "input", None]]},
        ],
    )

    assert devserver.stats()["uploads"] == 1
    assert devserver.run_ids("twin") == [first["id"], second["id"]]
    [in_first] = devserver.run_artifacts(first["id"])
    [in_second] = devserver.run_artifacts(second["id"])
    assert in_first["id"] != in_second["id"]
    assert in_first["checksum"] == in_second["checksum"]
    assert (in_first["category"], in_second["category"]) == ("output", "input")
    downloaded = client.call(
        "download", run_id=second["id"], output_dir=str(workdir / "dl"), names=["table.csv"]
    )
    assert downloaded["single"]["table.csv"] == {"table.csv": sha256(b"x,y\n1,2\n3,4\n")}


def test_file_artifact_new_attached_to_two_runs(devserver: DevServer, workdir: Path) -> None:
    client = OfficialClient(devserver, workdir)
    files = write_files(workdir)
    run_a, run_b = (
        devserver.api("POST", "/runs", json={"name": name, "folder": "/owners"}).json()["id"]
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
        answer = devserver.api("GET", f"/runs/{run_id}/artifacts/{artifact['id']}")
        assert answer.json() == {"category": category}
        [entry] = devserver.run_artifacts(run_id, category=category)
        assert entry["id"] == artifact["id"]
        assert entry["metadata"] == {"origin": "conformance"}
    owners = devserver.api(
        "GET", "/runs", params={"filters": json.dumps([f"artifact.id == {artifact['id']}"])}
    ).json()
    assert sorted(r["id"] for r in owners["data"]) == sorted([run_a, run_b])
    downloaded = client.call(
        "download", run_id=run_b, output_dir=str(workdir / "dl"), categories=["output"]
    )
    assert downloaded["categories"]["output"] == {"shared/mesh.dat": sha256(files["case/mesh.dat"])}


def test_offline_run_uploaded_by_sender(devserver: DevServer, workdir: Path) -> None:
    client = OfficialClient(devserver, workdir)
    files = write_files(workdir)
    offline = client.create_run(
        mode="offline",
        name="offline run",
        folder="/offline",
        files=[["in.txt", "input", None], ["big.bin", "output", "data/big.bin"]],
        objects=[[{"offline": True}, "output", "state"]],
    )
    assert offline["id"].startswith("offline_")
    assert devserver.stats()["api_requests"] == {}  # offline mode makes no requests

    sent = client.call("send_offline")

    run_id = sent["id_mapping"][offline["id"]]
    run = devserver.api("GET", f"/runs/{run_id}").json()
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
    assert devserver.stats()["uploads"] == 3


def test_changed_file_is_rejected_with_bad_digest(devserver: DevServer, workdir: Path) -> None:
    """As python-api's test_file_artifact_creation_offline_updated: the file changes between
    registration (offline) and sending, so storage refuses it with S3's BadDigest."""
    client = OfficialClient(devserver, workdir)
    write_files(workdir)
    client.create_run(mode="offline", name="changing", files=[["in.txt", "input", None]])
    (workdir / "in.txt").write_bytes(b"changed after registration\n")

    output = client.call("send_offline", expect_failure=True)

    assert "The SHA256 you specified did not match the calculated checksum." in output
    stats = devserver.stats()
    assert (stats["uploads"], stats["uploads_rejected"]) == (0, 1)


def test_official_client_reads_seeded_demo(seeded_devserver: DevServer, workdir: Path) -> None:
    client = OfficialClient(seeded_devserver, workdir)
    demo = next(run for run in RUNS if run.name == "demo run")
    [run_id] = seeded_devserver.run_ids("demo run")

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

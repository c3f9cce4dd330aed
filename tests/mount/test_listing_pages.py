"""Mounts of servers that answer listings as the real server is believed to (issue 15,
items 1, 8, 9): fields only when asked, pages capped below what is asked, ``--folder``
filtered by the server, artifacts not uploaded yet, storage that sends no length.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from helpers import attach_artifact, create_artifact, new_run, send_content, store_artifact

from simvuefs.devserver import seed
from testbed.devserver import DevServer
from testbed.mounts import mounted
from testbed.processes import wait_until

TTL = ("--metadata-ttl", "600")  # no listing expires during a test: request counts are exact


def _make(server: DevServer, folders: list[str]) -> list[str]:
    """One run with metadata per folder in *folders*; their names."""
    names = [f"run-{index:02d}" for index in range(len(folders))]
    for index, (name, folder) in enumerate(zip(names, folders, strict=True)):
        body = {"name": name, "folder": folder, "metadata": {"index": index}}
        server.api("POST", "/runs", json=body).raise_for_status()
    return names


def test_every_run_shows_when_pages_are_capped(
    devserver_factory: Callable[..., DevServer], tmp_path: Path
) -> None:
    server = devserver_factory("--realistic", "--fault", "page_size=7")
    names = _make(server, ["/"] * 20)
    server.reset_stats()
    with mounted(server, tmp_path, "--read-only", *TTL) as mount:
        assert sorted(os.listdir(mount.path / "runs")) == names
        info = json.loads((mount.path / "runs" / "run-13" / ".simvue-run.json").read_bytes())
        assert (info["name"], info["metadata"]) == ("run-13", {"index": 13})
    assert server.stats()["api_requests"]["GET /api/runs"] == 3


def test_names_and_folders_show_when_basic_fields_come_only_when_asked(
    devserver_factory: Callable[..., DevServer], tmp_path: Path
) -> None:
    server = devserver_factory("--fault", "basic_only_when_asked=true")
    names = _make(server, ["/a", "/b"])
    with mounted(server, tmp_path, "--read-only", *TTL) as mount:
        assert sorted(os.listdir(mount.path / "runs")) == names
        info = json.loads((mount.path / "runs" / "run-01" / ".simvue-run.json").read_bytes())
        assert (info["name"], info["folder"]) == ("run-01", "/b")


def test_the_server_filters_the_folder(
    devserver_factory: Callable[..., DevServer], tmp_path: Path
) -> None:
    # 1000 synthetic runs in / make an unfiltered listing 11 pages long; the folder's
    # filter brings one page, which the mount's own check narrows to /a and below.
    server = devserver_factory("--realistic", "--fault", "extra_runs=1000")
    names = _make(server, ["/a", "/a/b", "/ab", "/x/a", "/"])
    server.reset_stats()
    with mounted(server, tmp_path, "--read-only", "--folder", "/a", *TTL) as mount:
        assert sorted(os.listdir(mount.path / "runs")) == names[:2]
    assert server.stats()["api_requests"]["GET /api/runs"] == 1


def test_an_artifact_shows_once_it_is_uploaded(devserver: DevServer, tmp_path: Path) -> None:
    run_id = new_run(devserver, "uploading")
    store_artifact(devserver, run_id, "done.txt", b"done")
    content = b"arrives later\n"
    slot = create_artifact(devserver, "later.txt", content)
    attach_artifact(devserver, run_id, slot["id"], "output")
    with mounted(devserver, tmp_path, "--read-only", "--metadata-ttl", "0.2") as mount:
        output = mount.path / "runs" / "uploading" / "output"
        assert os.listdir(output) == ["done.txt"]
        assert not (output / "later.txt").exists()
        assert send_content(slot, content).status_code in (200, 204)
        devserver.api("PUT", f"/artifacts/{slot['id']}", json={"uploaded": True})
        assert wait_until(lambda: (output / "later.txt").exists(), timeout=10)
        assert sorted(os.listdir(output)) == ["done.txt", "later.txt"]
        assert (output / "later.txt").read_bytes() == content
    assert "later.txt" in mount.log_file.read_text()  # "not uploaded yet; not shown"


def test_sizes_and_content_when_storage_sends_no_length(
    seeded_devserver: DevServer, tmp_path: Path
) -> None:
    seeded_devserver.set_faults(chunked_no_length=True)
    with mounted(seeded_devserver, tmp_path, "--read-only") as mount:
        run = mount.path / "runs" / "demo run"
        for key, category in (("summary", "output"), ("spectrum", "output"), ("notes", "input")):
            artifact = seed.ARTIFACTS[key]
            assert artifact.content is not None
            path = run / category / artifact.name
            assert path.stat().st_size == len(artifact.content)
            assert path.read_bytes() == artifact.content
        with open(run / "output" / "large.bin", "rb") as large:
            large.seek(5_000_000)
            assert large.read(70_000) == seed.large_content(5_000_000, 70_000)
    assert seeded_devserver.stats()["faults_injected"]["chunked_no_length"] >= 4

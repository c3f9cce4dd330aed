"""The read-only views beside ``runs/``: ``by-id/``, ``folders/`` and ``tags/``.

Real mounts of the devserver. What each view should hold comes from the server's API (run
ids, folders, tags); which run a link reaches is read through the link (the run's
``user.simvue.id`` and ``.simvue-run.json``), never from simvuefs's own naming code.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simvuefs.devserver import seed
from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted
from testbed.processes import run_tool, wait_until

TTL_SLACK = 5.0
"""The default metadata TTL is 1 s; allow for a loaded machine."""


def server_runs(server: DevServer) -> list[dict[str, Any]]:
    response = server.api("GET", "/runs", params={"count": 100, "start": 0})
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()["data"]
    assert 0 < len(runs) < 100
    return runs


def run_id_at(path: Path) -> str:
    """The id of the run directory *path* (links followed), from its xattr."""
    return os.getxattr(path, "user.simvue.id").decode()


def ids_by_group(view: Path) -> dict[str, set[str]]:
    """``{relative directory: ids of the runs its links reach}`` for a view directory."""
    found: dict[str, set[str]] = {}
    for directory, subdirs, files in os.walk(view):
        for name in subdirs + files:
            path = Path(directory, name)
            if path.is_symlink():
                found.setdefault(str(Path(directory).relative_to(view)), set()).add(run_id_at(path))
    return found


@pytest.fixture(scope="module")
def shared(
    _seeded_devserver_session: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    """One read-only mount of the seeded devserver for the tests that only look."""
    _seeded_devserver_session.clear_faults()
    with mounted(_seeded_devserver_session, tmp_path_factory.mktemp("views"), "--read-only") as m:
        yield m


def test_root_lists_runs_then_the_views(shared: Mount) -> None:
    listed = run_tool(["ls", "-U", shared.path]).stdout.decode().split()
    assert listed == ["runs", "by-id", "folders", "tags"]
    for view in ("by-id", "folders", "tags"):
        mode = (shared.path / view).stat().st_mode
        assert stat.S_ISDIR(mode)
        assert stat.S_IMODE(mode) == 0o555


def test_by_id_has_one_link_per_run(shared: Mount, seeded_devserver: DevServer) -> None:
    ids = {run["id"] for run in server_runs(seeded_devserver)}
    by_id = shared.path / "by-id"
    assert set(os.listdir(by_id)) == ids
    for run_id in ids:
        assert run_id_at(by_id / run_id) == run_id
        document = json.loads((by_id / run_id / ".simvue-run.json").read_bytes())
        assert document["id"] == run_id


def test_folders_nest_the_server_folders(shared: Mount, seeded_devserver: DevServer) -> None:
    expected: dict[str, set[str]] = {}
    for run in server_runs(seeded_devserver):
        expected.setdefault(run["folder"].strip("/") or ".", set()).add(run["id"])
    assert ids_by_group(shared.path / "folders") == expected
    assert {"demo", "scans"} <= set(os.listdir(shared.path / "folders"))
    assert "cfd" in os.listdir(shared.path / "folders" / "demo")


def test_tags_group_the_runs_by_tag(shared: Mount, seeded_devserver: DevServer) -> None:
    expected: dict[str, set[str]] = {}
    for run in server_runs(seeded_devserver):
        for tag in run["tags"]:
            expected.setdefault(tag, set()).add(run["id"])
    assert expected  # the seed tags its runs
    assert set(os.listdir(shared.path / "tags")) == set(expected)
    assert ids_by_group(shared.path / "tags") == expected


def view_links(mount: Mount) -> list[Path]:
    links = []
    for view in ("by-id", "folders", "tags"):
        for directory, subdirs, files in os.walk(mount.path / view):
            links.extend(
                p for p in map(Path(directory).joinpath, subdirs + files) if p.is_symlink()
            )
    return links


def test_links_are_relative_and_name_the_run_directory(shared: Mount) -> None:
    links = view_links(shared)
    assert len(links) > 10
    for link in links:
        target = os.readlink(link)
        info = link.lstat()
        assert stat.S_ISLNK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o777
        assert info.st_size == len(os.fsencode(target))
        # Relative, up to the mount root, into runs/: the run's own directory (same inode).
        resolved = (link.parent / target).resolve()
        assert resolved.parent == shared.path / "runs"
        depth = len(link.relative_to(shared.path).parts) - 1
        assert target == "../" * depth + "runs/" + resolved.name
        assert resolved.stat().st_ino == link.stat().st_ino
        if link.parent.name != "by-id":
            assert link.name == resolved.name


def test_cp_follows_a_tag_link_and_copies_the_run(shared: Mount, tmp_path: Path) -> None:
    (run_dir,) = os.listdir(shared.path / "tags" / "cfd")
    copy = tmp_path / "copy"
    run_tool(["cp", "-rL", shared.path / "tags" / "cfd" / run_dir, copy])
    original = shared.path / "runs" / run_dir
    copied = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    assert copied == sorted(str(p.relative_to(original)) for p in original.rglob("*"))
    for name in copied:
        if (copy / name).is_file():
            assert (copy / name).read_bytes() == (original / name).read_bytes()
    residuals = copy / "output" / "residuals.csv"
    assert residuals.read_bytes() == seed.ARTIFACTS["residuals"].content
    # find -L and tar -h walk through the links as well.
    found = run_tool(["find", "-L", shared.path / "tags" / "cfd", "-name", "residuals.csv"])
    assert found.stdout.decode().count("residuals.csv") == 1
    run_tool(["tar", "-chf", tmp_path / "cfd.tar", "-C", shared.path / "tags", "cfd"])
    listing = run_tool(["tar", "-tf", tmp_path / "cfd.tar"]).stdout.decode()
    assert f"cfd/{run_dir}/output/residuals.csv" in listing.splitlines()


def test_views_refuse_writes(seeded_devserver: DevServer, tmp_path: Path) -> None:
    with mounted(seeded_devserver, tmp_path) as writable:
        some_id = os.listdir(writable.path / "by-id")[0]
        attempts = [
            lambda: os.mkdir(writable.path / "tags" / "new"),
            lambda: os.mkdir(writable.path / "folders" / "new"),
            lambda: open(writable.path / "by-id" / "new", "w").close(),
            lambda: os.unlink(writable.path / "by-id" / some_id),
            lambda: os.symlink("runs", writable.path / "by-id" / "new"),
            lambda: os.rename(writable.path / "by-id" / some_id, writable.path / "by-id" / "x"),
        ]
        for attempt in attempts:
            with pytest.raises(OSError, match="Read-only file system") as caught:
                attempt()
            assert caught.value.errno == errno.EROFS
        # Writing into a run's input/ through a link is writing into the run itself.
        assert (writable.path / "by-id" / some_id / "input").is_dir()


def test_views_follow_the_mount_selection(seeded_devserver: DevServer, tmp_path: Path) -> None:
    scans = [run for run in server_runs(seeded_devserver) if run["folder"] == "/scans"]
    with mounted(seeded_devserver, tmp_path, "--read-only", "--folder", "/scans") as m:
        assert set(os.listdir(m.path / "by-id")) == {run["id"] for run in scans}
        assert os.listdir(m.path / "folders") == ["scans"]
        assert set(os.listdir(m.path / "tags")) == {tag for run in scans for tag in run["tags"]}


def create_run(server: DevServer, name: str, folder: str, tags: list[str]) -> str:
    body = {"name": name, "folder": folder, "status": "running", "tags": tags}
    response = server.api("POST", "/runs", json=body)
    response.raise_for_status()
    run_id: str = response.json()["id"]
    return run_id


def test_by_id_keeps_reaching_a_run_whose_name_is_taken(
    devserver: DevServer, tmp_path: Path
) -> None:
    older = create_run(devserver, "alpha", "/team/a\u0007b", ["x/y"])
    with mounted(devserver, tmp_path, "--read-only") as m:
        link = m.path / "by-id" / older
        assert run_id_at(link) == older
        assert os.readlink(link) == "../runs/alpha"
        # Tags and folder parts are named like runs: "/" is U+2215, control characters U+FFFD.
        assert os.listdir(m.path / "tags") == ["x\u2215y"]
        assert run_id_at(m.path / "tags" / "x\u2215y" / "alpha") == older
        assert run_id_at(m.path / "folders" / "team" / "a\ufffdb" / "alpha") == older

        newer = create_run(devserver, "alpha", "/team", [])
        assert wait_until(lambda: len(os.listdir(m.path / "by-id")) == 2, TTL_SLACK)
        assert wait_until(lambda: os.readlink(link) == f"../runs/alpha@{older}", TTL_SLACK)
        assert run_id_at(link) == older
        assert json.loads((link / ".simvue-run.json").read_bytes())["id"] == older
        assert run_id_at(m.path / "by-id" / newer) == newer
        assert run_id_at(m.path / "folders" / "team" / "alpha") == newer
        old_in_folder = m.path / "folders" / "team" / "a\ufffdb" / f"alpha@{older}"
        assert run_id_at(old_in_folder) == older

"""``runs/<run>/.simvue-run.json`` and the run directory's xattrs, through real mounts.

The seeded server's records (``GET /api/runs``) are the reference: the file is compared
field by field after ``json.load``, its ``stat`` size with the bytes read, and a status
change on the server shows in both file and xattrs once the metadata TTL has passed.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from simvuefs.fuse.runinfo import RUN_INFO_NAME
from testbed.devserver import DevServer
from testbed.mounts import Mount, mounted
from testbed.processes import run_tool, wait_until


@pytest.fixture(scope="module")
def mount(
    _seeded_devserver_session: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    _seeded_devserver_session.clear_faults()
    with mounted(
        _seeded_devserver_session, tmp_path_factory.mktemp("runinfo"), "--read-only"
    ) as own:
        yield own


def _server_time(text: str | None) -> str | None:
    if text is None:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _expected(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "status": record["status"],
        "folder": record["folder"],
        "tags": record["tags"],
        "description": record["description"] or "",
        "created": _server_time(record["created"]),
        "started": _server_time(record["started"]),
        "endtime": _server_time(record["endtime"]),
        "metadata": record["metadata"],
    }


def _records(server: DevServer) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = server.api("GET", "/runs", params={"count": 100}).json()["data"]
    return records


def test_every_run_has_its_record_as_json(mount: Mount, seeded_devserver: DevServer):
    records = _records(seeded_devserver)
    assert len(records) == 7
    for record in records:
        path = mount.path / "runs" / f"{record['name'].replace('/', '∕')}@{record['id']}"
        data = (path / RUN_INFO_NAME).read_bytes()
        assert data.endswith(b"\n")
        assert json.loads(data) == _expected(record)
        assert list(json.loads(data)) == list(_expected(record))  # stable key order
        assert os.stat(path / RUN_INFO_NAME).st_size == len(data)
    demo = json.loads((mount.path / "runs" / "demo run" / RUN_INFO_NAME).read_text())
    assert demo["tags"] == ["demo", "baseline"]
    assert demo["description"] == "Baseline demo with every kind of artifact"
    assert demo["endtime"] is not None


def test_the_file_is_read_only_and_not_listed(mount: Mount):
    run = mount.path / "runs" / "demo run"
    info = run / RUN_INFO_NAME
    assert RUN_INFO_NAME not in os.listdir(run)
    assert oct(info.stat().st_mode & 0o777) == "0o444"
    with pytest.raises(OSError, match="Read-only file system|Permission denied") as raised:
        os.open(info, os.O_WRONLY)
    assert raised.value.errno in (errno.EROFS, errno.EACCES)
    # find -L and cp -r of the run copy the artifacts only
    found = run_tool(["find", "runs/demo run", "-type", "f"], cwd=mount.path).stdout.decode()
    assert RUN_INFO_NAME not in found


def test_run_xattrs(mount: Mount, seeded_devserver: DevServer):
    record = next(r for r in _records(seeded_devserver) if r["name"] == "demo run")
    output = run_tool(
        ["getfattr", "-d", "--absolute-names", str(mount.path / "runs" / "demo run")]
    ).stdout.decode()
    values = dict(
        line.split("=", 1) for line in output.splitlines() if line.startswith("user.simvue.")
    )
    assert values == {
        "user.simvue.id": f'"{record["id"]}"',
        "user.simvue.name": '"demo run"',
        "user.simvue.status": '"completed"',
        "user.simvue.folder": '"/demo"',
        "user.simvue.tags": '"demo,baseline"',
        "user.simvue.created": f'"{_server_time(record["created"])}"',
        "user.simvue.started": f'"{_server_time(record["started"])}"',
        "user.simvue.endtime": f'"{_server_time(record["endtime"])}"',
        "user.simvue.description": '"Baseline demo with every kind of artifact"',
    }


def test_the_record_follows_the_server(devserver: DevServer, tmp_path: Path):
    run_id = devserver.api(
        "POST", "/runs", json={"name": "live", "folder": "/live", "tags": ["a"]}
    ).json()["id"]
    with mounted(devserver, tmp_path, "--read-only", "--metadata-ttl", "1") as mount:
        info = mount.path / "runs" / "live" / RUN_INFO_NAME
        assert json.loads(info.read_text())["status"] == "running"
        devserver.api(
            "PUT", f"/runs/{run_id}", json={"status": "completed", "metadata": {"b": 1, "a": 2}}
        ).raise_for_status()

        def changed() -> bool:
            return json.loads(info.read_text())["status"] == "completed"

        assert wait_until(changed, 10)
        data = info.read_bytes()
        assert json.loads(data)["metadata"] == {"a": 2, "b": 1}
        assert data.index(b'"a"') < data.index(b'"b"')  # metadata keys sorted
        # st_size follows within the metadata TTL (SEMANTICS: the record of the latest runs
        # listing); the open above may already have read a newer record than the one stat
        # has, on a loaded machine.
        assert wait_until(lambda: info.stat().st_size == len(info.read_bytes()), 10)
        status = os.getxattr(mount.path / "runs" / "live", "user.simvue.status")
        assert status == b"completed"

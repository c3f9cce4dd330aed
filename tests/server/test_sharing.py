"""Users, tenants and shared runs on the devserver, and simvuefs's client and tree over them.

A real devserver seeded with ``--seed multiuser`` (the demo plus runs of ``colleague`` and
``outsider``), tokens of other users from ``POST /admin/tokens``; the tree is driven through
its FUSE handlers without a kernel (``ops_util``), so its own refusal is what is tested
(a mount's kernel refuses first, from the mode: ``tests/mount/test_shared_runs.py``).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
from helpers import new_run, report_log_on_failure, settings_for, store_artifact
from ops_util import CTX
from sharing_util import MULTIUSER, SHARED_WITH_ME, api_as, seeded_names, token_for

from simvuefs.backends.client import SimvueClient
from simvuefs.devserver import seed
from simvuefs.devserver.sharing import NOT_OWNER
from simvuefs.devserver.store import DEFAULT_USER
from simvuefs.fuse.attrs import AttrPolicy
from simvuefs.fuse.fs import Operations
from simvuefs.fuse.tree import RunSelection, Tree
from simvuefs.read.reader import open_reader
from simvuefs.write.upload import open_uploader
from testbed.devserver import DevServer

CREATE = "POST /api/artifacts"
ATTACH = "PUT /api/runs/{run_id}/artifacts/{artifact_id}"
WRITABLE = AttrPolicy(uid=1, gid=1, mount_time_ns=0, block_size=1 << 20, writable=True)


@pytest.fixture(scope="module")
def _multiuser_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("multiuser"), MULTIUSER).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def multiuser(_multiuser_server: DevServer, request: pytest.FixtureRequest) -> DevServer:
    """The module's ``--seed multiuser`` devserver: tests must not change its runs."""
    report_log_on_failure(request, _multiuser_server)
    _multiuser_server.clear_faults()
    return _multiuser_server


def _names(token: str, server: DevServer, *filters: str) -> list[str]:
    params = {"filters": "[" + ",".join(f'"{f}"' for f in filters) + "]"} if filters else {}
    answer = api_as(token, server, "GET", "/runs", params=params)
    answer.raise_for_status()
    return sorted(run["name"] for run in answer.json()["data"])


def _run_id(server: DevServer, name: str) -> str:
    (run_id,) = server.run_ids(name)
    return run_id


# -- the devserver ---------------------------------------------------------------------


@pytest.mark.parametrize("user", [DEFAULT_USER, "colleague", "outsider", "newcomer"])
def test_each_user_lists_the_runs_they_may_see(multiuser, user):
    token = multiuser.token if user == DEFAULT_USER else token_for(multiuser, user)
    assert _names(token, multiuser) == seeded_names(user)


def test_the_default_user_sees_runs_shared_by_name_tenant_and_public(multiuser):
    names = _names(multiuser.token, multiuser)
    assert {"shared with me", "tenant run", "public run"} <= set(names)
    assert "colleague private" not in names
    assert "outsider tenant run" not in names  # tenant visibility of another tenant
    assert [run.name for run in SHARED_WITH_ME] == ["shared with me", "tenant run", "public run"]
    own = _names(multiuser.token, multiuser, "user == self")
    assert own == sorted(run.name for run in seed.RUNS)


def test_whoami_names_the_user_and_tenant_of_the_token(multiuser):
    assert multiuser.api("GET", "/whoami").json() == {"user": DEFAULT_USER, "tenant": DEFAULT_USER}
    outsider = token_for(multiuser, "outsider")
    assert api_as(outsider, multiuser, "GET", "/whoami").json() == {
        "user": "outsider",
        "tenant": "elsewhere",
    }


def test_runs_a_user_may_not_see_are_not_found(multiuser):
    private = _run_id_as(multiuser, "colleague", "colleague private")
    for path in (f"/runs/{private}", f"/runs/{private}/artifacts"):
        assert multiuser.api("GET", path).status_code == 404
    shared = _run_id(multiuser, "shared with me")
    assert multiuser.api("GET", f"/runs/{shared}").json()["user"] == "colleague"
    assert {a["name"] for a in multiuser.run_artifacts(shared)} == {"params.txt", "result.txt"}


def _run_id_as(server: DevServer, user: str, name: str) -> str:
    answer = api_as(
        token_for(server, user), server, "GET", "/runs", params={"filters": f'["name == {name}"]'}
    )
    (run,) = answer.json()["data"]
    run_id: str = run["id"]
    return run_id


def test_only_the_owner_may_attach_or_change_a_run(devserver):
    colleague = token_for(devserver, "colleague")
    run = api_as(colleague, devserver, "POST", "/runs", json={"name": "theirs", "folder": "/"})
    run_id = run.json()["id"]
    assert run.json()["user"] == "colleague"
    assert devserver.api("GET", f"/runs/{run_id}").status_code == 404  # private to colleague
    shared = {"visibility": {"users": [DEFAULT_USER], "public": False, "tenant": False}}
    assert api_as(colleague, devserver, "PUT", f"/runs/{run_id}", json=shared).status_code == 200
    assert devserver.api("GET", f"/runs/{run_id}").status_code == 200
    mine = new_run(devserver, "mine")
    artifact_id = store_artifact(devserver, mine, "x.txt", b"x", category="input")["id"]
    refused = devserver.api(
        "PUT", f"/runs/{run_id}/artifacts/{artifact_id}", json={"category": "input"}
    )
    assert (refused.status_code, refused.json()) == (403, {"detail": NOT_OWNER})
    assert devserver.run_artifacts(run_id) == []
    assert devserver.api("PUT", f"/runs/{run_id}", json={"name": "renamed"}).status_code == 403
    assert devserver.api("DELETE", f"/runs/{run_id}").status_code == 403
    done = api_as(
        colleague,
        devserver,
        "PUT",
        f"/runs/{run_id}/artifacts/{artifact_id}",
        json={"category": "input"},
    )
    assert done.status_code == 200


def test_a_token_can_move_its_user_to_another_tenant(devserver):
    colleague = token_for(devserver, "colleague")
    run = api_as(colleague, devserver, "POST", "/runs", json={"name": "team", "folder": "/"})
    team = {"visibility": {"tenant": True, "public": False, "users": []}}
    api_as(colleague, devserver, "PUT", f"/runs/{run.json()['id']}", json=team)
    assert "team" in _names(devserver.token, devserver)
    token_for(devserver, "colleague", tenant="elsewhere")
    assert "team" not in _names(devserver.token, devserver)
    newcomer = token_for(devserver, "newcomer", tenant="elsewhere")
    assert "team" in _names(newcomer, devserver)
    bad = devserver.http.post("/admin/tokens", json={"user": "no\nnewlines"})
    assert bad.status_code == 422


# -- simvuefs's client and tree ----------------------------------------------------------


async def test_the_client_learns_who_it_is_and_whose_runs_it_lists(multiuser):
    async with SimvueClient.open(settings_for(multiuser)) as client:
        assert await client.whoami() == DEFAULT_USER
        owners = {run.name: run.user for run in await client.list_runs()}
        assert owners["shared with me"] == "colleague"
        assert owners["demo run"] == DEFAULT_USER
        own = await client.list_runs(RunSelection(own_only=True).server_filters())
        assert {run.user for run in own} == {DEFAULT_USER}


@pytest.mark.parametrize("status", [404, 405, 403, 500])
async def test_a_server_without_whoami_leaves_the_user_unknown(multiuser, status):
    multiuser.set_faults(
        api_error_status=status, api_error_rate=1.0, api_error_route="GET /api/whoami"
    )
    async with SimvueClient.open(settings_for(multiuser, request_timeout=3)) as client:
        assert await client.whoami() is None


@asynccontextmanager
async def writable_ops(
    server: DevServer, spool: Path, **selection: Any
) -> AsyncIterator[Operations]:
    """Writable Operations over a real client, reader and uploader, the tree knowing the
    user as ``whoami`` says (as a mount does)."""
    config = settings_for(server, spool_dir=spool, spool_min_free=0)
    async with SimvueClient.open(config) as client, open_reader(client, config) as reader:
        tree = Tree(client, config, RunSelection(**selection), user=await client.whoami())
        async with open_uploader(client, config, on_landed=tree.landed) as uploader:
            tree.start_writing(uploader)
            policy = AttrPolicy(
                uid=1, gid=1, mount_time_ns=0, block_size=1 << 20, writable=True, user=tree.user
            )
            yield Operations(tree, reader, policy, uploader)


async def _walk(ops: Operations, *names: str) -> pyfuse3.EntryAttributes:
    inode = pyfuse3.ROOT_INODE
    attr = await ops.getattr(inode, CTX)
    for name in names:
        attr = await ops.lookup(inode, os.fsencode(name), CTX)
        inode = attr.st_ino
    return attr


async def test_input_of_a_shared_run_refuses_new_files_before_any_request(multiuser, tmp_path):
    async with writable_ops(multiuser, tmp_path / "spool") as ops:
        shared = await _walk(ops, "runs", "shared with me", "input")
        assert stat.S_IMODE(shared.st_mode) == 0o555
        own = await _walk(ops, "runs", "demo run", "input")
        assert stat.S_IMODE(own.st_mode) == 0o755
        multiuser.reset_stats()
        with pytest.raises(pyfuse3.FUSEError) as created:
            await ops.create(shared.st_ino, b"new.txt", 0o644, os.O_WRONLY, CTX)
        assert created.value.errno == errno.EACCES
        with pytest.raises(pyfuse3.FUSEError) as made:
            await ops.mkdir(shared.st_ino, b"sub", 0o755, CTX)
        assert made.value.errno == errno.EACCES
        requests = multiuser.stats()["api_requests"]
        assert CREATE not in requests
        assert ATTACH not in requests
        assert multiuser.stats()["uploads"] == 0
        # What is shared can be read.
        params = await ops.lookup(shared.st_ino, b"params.txt", CTX)
        handle = await ops.open(params.st_ino, os.O_RDONLY, CTX)
        assert await ops.read(handle.fh, 0, 100) == b"alpha=0.3\n"
        await ops.release(handle.fh)


async def test_the_refusal_says_whose_run_it_is(multiuser, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="simvuefs")  # repeats of a refusal log at DEBUG
    async with writable_ops(multiuser, tmp_path / "spool") as ops:
        shared = await _walk(ops, "runs", "tenant run", "input")
        with pytest.raises(pyfuse3.FUSEError):
            await ops.create(shared.st_ino, b"new.txt", 0o644, os.O_WRONLY, CTX)
    text = caplog.text
    assert "'tenant run'" in text
    assert "colleague's" in text
    assert "only its owner can add input files" in text
    assert "run(s) shown are other users'" in text


async def test_own_runs_only_leaves_shared_runs_out(multiuser, tmp_path):
    async with writable_ops(multiuser, tmp_path / "spool", own_only=True) as ops:
        runs = await _walk(ops, "runs")
        for name in ("shared with me", "tenant run", "public run"):
            assert (await ops.lookup(runs.st_ino, name.encode(), CTX)).st_ino == 0
        assert (await ops.lookup(runs.st_ino, b"demo run", CTX)).st_ino != 0

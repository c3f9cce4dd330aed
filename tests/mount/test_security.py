"""Security properties: secrets stay secret, the mount stays private, the server checks what
it is sent, and content is only ever bytes.

- The token never appears in the mount's log (at DEBUG), in ``ps`` output, or in any file
  the mount writes (spool, journal, mount records), whatever happens: reads, uploads,
  errors, refused tokens, refreshed URLs. Neither do the signatures of storage URLs.
- There is no ``--token`` option: a token is never on a command line.
- The mount is private to the mounting user unless ``--allow-other``: another user (nobody)
  gets EACCES from the kernel.
- The devserver refuses missing, forged and expired tokens, and storage URLs whose
  signature or expiry was tampered with; the client never sends the token to storage.
- No module of simvuefs unpickles, evaluates or executes anything (checked on the source).
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from devserver_util import DevServer
from fuse_util import REPO, mounted, run_tool

from simvuefs.backends.client import SimvueClient
from simvuefs.config import Settings
from simvuefs.devserver.auth import mint_token
from simvuefs.models import Artifact

pytestmark = pytest.mark.fuse

NOBODY = 65534


def new_run(server: DevServer, name: str) -> str:
    answer = server.api("POST", "/runs", json={"name": name, "folder": "/", "status": "running"})
    answer.raise_for_status()
    run_id: str = answer.json()["id"]
    return run_id


def store(server: DevServer, run_id: str, name: str, content: bytes) -> dict[str, Any]:
    """Upload *content* as the official client does; return the artifact record."""
    slot = server.api(
        "POST",
        "/artifacts",
        json={
            "name": name,
            "original_path": f"/data/{name}",
            "size": len(content),
            "mime_type": "application/octet-stream",
            "checksum": hashlib.sha256(content).hexdigest(),
        },
    ).json()
    if slot["url"]:
        files = {"file": ("file", content)}
        answer = httpx.post(slot["url"], data=slot.get("fields") or {}, files=files, timeout=30)
        assert answer.status_code in (200, 204)
        server.api("PUT", f"/artifacts/{slot['id']}", json={"uploaded": True}).raise_for_status()
    server.api(
        "PUT", f"/runs/{run_id}/artifacts/{slot['id']}", json={"category": "output"}
    ).raise_for_status()
    record: dict[str, Any] = server.api("GET", f"/artifacts/{slot['id']}").json()
    return record


def private_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give the mount (which inherits the environment) state and cache directories of its own."""
    base = tmp_path / "xdg"
    for variable in ("XDG_CACHE_HOME", "XDG_STATE_HOME"):
        (base / variable).mkdir(parents=True)
        monkeypatch.setenv(variable, str(base / variable))
    for variable in ("SIMVUE_TOKEN", "SIMVUE_URL"):
        monkeypatch.delenv(variable, raising=False)
    return base


def test_the_token_and_url_signatures_never_leave_a_trace(
    devserver: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg = private_env(tmp_path, monkeypatch)
    token = devserver.http.post("/admin/tokens", json={}).json()["token"]
    config = devserver.config_path
    config.write_text(f'[server]\nurl = "{devserver.url}"\ntoken = "{token}"\n')
    run_id = new_run(devserver, "secrets")
    record = store(devserver, run_id, "data.bin", os.urandom(3 * 1024 * 1024))
    signature = dict(parse_qsl(urlsplit(record["url"]).query))["sig"]
    secrets = {"token": token, "token signature": token.rsplit(".", 1)[1], "url sig": signature}
    places: dict[str, str] = {}
    with mounted(devserver, tmp_path, "--log-level", "DEBUG", "--request-timeout", "3") as mount:
        base = mount.path / "runs" / "secrets"
        places["ps"] = run_tool(["ps", "-eo", "args"]).stdout.decode(errors="replace")
        assert (base / "output" / "data.bin").read_bytes()
        (base / "input" / "landed.txt").write_bytes(b"uploaded through the mount\n")
        # An upload that cannot land now stays pending, with its journal record on disk.
        devserver.set_faults(
            api_error_status=503, api_error_rate=1.0, api_error_route="POST /api/artifacts"
        )
        with pytest.raises(OSError):  # noqa: PT011 (EIO or ETIMEDOUT: both are fine here)
            (base / "input" / "pending.txt").write_bytes(b"waiting for the server\n")
        places.update(files_below(xdg))
        # Errors of all kinds: missing names, storage failures, expired URLs, a refused token.
        assert not (base / "output" / "missing").exists()
        devserver.set_faults(storage_error_status=500, storage_error_count=20, url_expiry=-1)
        big = base / "output" / "data.bin"
        run_tool(
            ["dd", f"if={big}", "iflag=direct", "bs=4k", "skip=300", "status=none"], check=False
        )
        devserver.http.post("/admin/tokens", json={"revoke_others": True})
        time.sleep(1.2)
        with pytest.raises(PermissionError):
            os.listdir(mount.path / "runs")
        devserver.clear_faults()
    places["log"] = mount.log_file.read_text(errors="replace")
    places.update({f"{name} (after unmount)": text for name, text in files_below(xdg).items()})
    assert any("pending" in name for name in places), sorted(places)  # the journal was seen
    for where, text in places.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in {where}"
    assert "refuses the token" in places["log"]


def files_below(directory: Path) -> dict[str, str]:
    return {
        str(path): path.read_text(errors="replace")
        for path in directory.rglob("*")
        if path.is_file()
    }


def test_there_is_no_token_option(tmp_path: Path) -> None:
    """A token on a command line would be visible to every user (ps, /proc)."""
    result = run_tool(
        [sys.executable, "-m", "simvuefs", "mount", tmp_path, "--token", "x.y.z"], check=False
    )
    assert result.returncode == 2
    assert b"unrecognized arguments: --token" in result.stderr


def as_nobody(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]
    return run_tool(command, check=False)


def mount_options(mountpoint: Path) -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as table:
        for line in table:
            fields = line.split()
            if fields[1] == str(mountpoint):
                return fields[3].split(",")
    raise AssertionError(f"{mountpoint} is not in /proc/mounts")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's temporary directories are 0700, which
    would keep other users out of any mount below them whatever the mount allows)."""
    path = Path(tempfile.mkdtemp(prefix="simvuefs-security-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_mount_is_private_unless_allow_other(devserver: DevServer, public_dir: Path) -> None:
    run_id = new_run(devserver, "private")
    store(devserver, run_id, "secret.txt", b"for my eyes only\n")
    for name in ("one", "two"):
        (public_dir / name).mkdir(mode=0o755)
    with mounted(devserver, public_dir / "one") as mount:
        assert "allow_other" not in mount_options(mount.path)
        assert f"user_id={os.getuid()}" in mount_options(mount.path)
        assert as_nobody("ls", public_dir / "one").returncode == 0  # the way in is open
        refused = as_nobody("ls", mount.path / "runs")
        assert refused.returncode != 0
        assert b"Permission denied" in refused.stderr
        file = mount.path / "runs" / "private" / "output" / "secret.txt"
        assert b"Permission denied" in as_nobody("cat", file).stderr
    with mounted(devserver, public_dir / "two", "--allow-other") as shared:
        assert "allow_other" in mount_options(shared.path)
        listing = as_nobody("ls", shared.path / "runs")
        assert listing.stdout == b"private\n", listing.stderr
        file = shared.path / "runs" / "private" / "output" / "secret.txt"
        assert as_nobody("cat", file).stdout == b"for my eyes only\n"
        # Others may read what is shared, never write into it.
        written = as_nobody("touch", shared.path / "runs" / "private" / "input" / "theirs.txt")
        assert b"Permission denied" in written.stderr


def test_the_server_refuses_bad_tokens_and_tampered_urls(devserver: DevServer) -> None:
    version = devserver.url + "/api/version"
    secret = bytes.fromhex((devserver.data_dir / "secret").read_text().strip())
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {mint_token(os.urandom(32), 'devserver')}"},  # forged
        {"Authorization": f"Bearer {mint_token(secret, 'devserver', lifetime=-10)}"},  # expired
        {"Authorization": f"Bearer {devserver.token[:-2]}"},  # signature cut
    ):
        assert httpx.get(version, headers=headers).status_code == 401, headers
    assert httpx.get(version, headers={"Authorization": f"Bearer {devserver.token}"}).is_success
    run_id = new_run(devserver, "signed")
    first = store(devserver, run_id, "a.txt", b"first\n")
    second = store(devserver, run_id, "b.txt", b"second\n")
    assert httpx.get(first["url"]).content == b"first\n"
    parts = urlsplit(first["url"])
    query = dict(parse_qsl(parts.query))
    other_sig = dict(parse_qsl(urlsplit(second["url"]).query))["sig"]

    def with_query(path: str, **changes: str | None) -> str:
        values = {k: v for k, v in {**query, **changes}.items() if v is not None}
        return urlunsplit(parts._replace(path=path, query=urlencode(values)))

    for tampered in (
        with_query(parts.path, sig=None),
        with_query(parts.path, expires=str(int(query["expires"]) + 3600)),
        with_query(parts.path, sig=other_sig),  # another artifact's signature
        with_query(urlsplit(second["url"]).path),  # this signature on another artifact
        with_query(parts.path, expires=str(int(time.time()) - 1)),
    ):
        answer = httpx.get(tampered)
        assert answer.status_code == 403, tampered
        assert b"AccessDenied" in answer.content
    devserver.set_faults(url_expiry=-1)
    expired = devserver.api("GET", f"/artifacts/{first['id']}").json()["url"]
    assert b"Request has expired" in httpx.get(expired).content


class Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


async def test_the_client_never_sends_the_token_to_storage() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "storage.test":
            headers = {"Content-Range": "bytes 0-2/3"}
            return httpx.Response(206, headers=headers, stream=Body(b"abc"))
        return httpx.Response(200, json={"id": "a", "name": "a", "url": "http://storage.test/x"})

    settings = Settings(url="http://api.test/api", token="the.secret.token")
    artifact = Artifact(id="a", name="a", size=3, url="http://storage.test/x?sig=1")
    async with SimvueClient.open(settings, transport=httpx.MockTransport(handler)) as client:
        assert await client.read_range(artifact, 0, 3) == b"abc"
        await client.get_artifact("a")
    storage = [r for r in seen if r.url.host == "storage.test"]
    api = [r for r in seen if r.url.host == "api.test"]
    assert storage
    assert api
    assert all("authorization" not in r.headers for r in storage)
    assert all(r.headers["authorization"] == "Bearer the.secret.token" for r in api)


# Names whose use on artifact content would mean executing or unpickling it.
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_ATTRIBUTES = {("os", "system"), ("os", "popen"), ("yaml", "load"), ("numpy", "load")}


def test_no_module_unpickles_evaluates_or_executes_anything() -> None:
    problems = []
    for path in sorted((REPO / "simvuefs").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            problems += [f"{where}:{node.lineno} imports {n}" for n in names & FORBIDDEN_MODULES]
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                problems.append(f"{where}:{node.lineno} calls {func.id}")
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in FORBIDDEN_ATTRIBUTES
            ):
                problems.append(f"{where}:{node.lineno} calls {func.value.id}.{func.attr}")
            if any(k.arg == "shell" for k in node.keywords):
                problems.append(f"{where}:{node.lineno} runs a shell")
    assert problems == []

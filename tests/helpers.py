"""Small helpers shared by the tests of every level (unit, server, mount).

- :func:`sha256` and :func:`sha256_file`: the lowercase hex SHA-256 that Simvue records as an
  artifact's checksum.
- :func:`settings_for`: simvuefs :class:`~simvuefs.config.Settings` for a devserver fixture,
  or (no server) for a fake API behind ``httpx.MockTransport`` at :data:`FAKE_API_URL`.
- :func:`report_log_on_failure`: attach a devserver's log to the report of a failing test
  (``tests/conftest.py`` does it for the devserver fixtures).
- :func:`new_run` and :func:`store_artifact`: runs and artifacts made over a devserver's API
  with the official client's request sequence (create, upload unless deduplicated, mark
  uploaded, attach; :func:`create_artifact` and :func:`attach_artifact` are its steps, for
  artifacts attached before their upload); :func:`raw_run` and :func:`raw_artifact`: the
  same through the devserver's admin routes, which take any record (names no client may
  send, sizes that lie); :func:`multipart_body`: an S3-style upload form, streamed.

Every test that needs one of these imports it from here; none defines its own copy.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from simvuefs.config import Settings

if TYPE_CHECKING:  # at run time only duck-typed: tests/official_client.py imports this
    from testbed.devserver import DevServer

FAKE_API_URL = "http://api.test/api"
"""The API of fake servers (``httpx.MockTransport``): never resolved, never contacted."""
FAKE_TOKEN = "secret-token"
READ_CHUNK = 4 * 1024 * 1024


def sha256(data: bytes) -> str:
    """Return the hex SHA-256 of *data*."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of the file at *path*, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def settings_for(server: DevServer | None = None, **overrides: Any) -> Settings:
    """Return Settings for the devserver *server* (its API URL and token), or, for None, for
    a fake API at :data:`FAKE_API_URL` with :data:`FAKE_TOKEN`. *overrides* (``url`` and
    ``token`` included) replace any field."""
    if server is None:
        values: dict[str, Any] = {"url": FAKE_API_URL, "token": FAKE_TOKEN}
    else:
        values = {"url": server.api_url, "token": server.token}
    return Settings(**{**values, **overrides})


DEVSERVERS_USED = pytest.StashKey[list["DevServer"]]()
"""The devservers a test used: ``tests/conftest.py`` attaches their logs when it fails."""


def report_log_on_failure(request: pytest.FixtureRequest, server: DevServer) -> None:
    """Attach *server*'s log to the report of the test of *request* if that test fails."""
    request.node.stash.setdefault(DEVSERVERS_USED, []).append(server)


def new_run(server: DevServer, name: str, *, status: str = "running", folder: str = "/") -> str:
    """Create a run called *name* on *server*; return its id."""
    answer = server.api("POST", "/runs", json={"name": name, "folder": folder, "status": status})
    answer.raise_for_status()
    run_id: str = answer.json()["id"]
    return run_id


def create_artifact(server: DevServer, name: str, content: bytes) -> dict[str, Any]:
    """Create artifact *name* for *content* (``POST /api/artifacts``, the official client's
    fields); return the answer: ``id`` and the upload ``url`` (None: the content is known)."""
    slot = server.api(
        "POST",
        "/artifacts",
        json={
            "name": name,
            "original_path": f"/work/{name}",
            "size": len(content),
            "mime_type": "application/octet-stream",
            "checksum": sha256(content),
            "metadata": None,
        },
    )
    slot.raise_for_status()
    created: dict[str, Any] = slot.json()
    return created


def attach_artifact(server: DevServer, run_id: str, artifact_id: str, category: str) -> None:
    """Attach artifact *artifact_id* to the run in *category*."""
    attached = server.api(
        "PUT", f"/runs/{run_id}/artifacts/{artifact_id}", json={"category": category}
    )
    attached.raise_for_status()


def store_artifact(
    server: DevServer, run_id: str, name: str, content: bytes, category: str = "output"
) -> dict[str, Any]:
    """Store *content* as artifact *name* of the run in *category*, as the official client
    does; return the artifact's record (``GET /api/artifacts/{id}``: id, created, a fresh
    download URL, ...)."""
    created = create_artifact(server, name, content)
    if created["url"]:
        sent = send_content(created, content)
        assert sent.status_code in (200, 204), sent.text
        server.api("PUT", f"/artifacts/{created['id']}", json={"uploaded": True}).raise_for_status()
    attach_artifact(server, run_id, created["id"], category)
    record: dict[str, Any] = server.api("GET", f"/artifacts/{created['id']}").json()
    return record


def raw_run(server: DevServer, name: str) -> str:
    """Create a running run called *name*, whatever the name, over the admin route."""
    answer = server.http.post("/admin/runs", json={"name": name, "status": "running"})
    answer.raise_for_status()
    run_id: str = answer.json()["id"]
    return run_id


def raw_artifact(server: DevServer, run_id: str, record: dict[str, Any], content: str) -> str:
    """Attach an artifact with *record* (any fields) and *content* to the run, in
    ``output``, over the admin route; return its id."""
    answer = server.http.post(
        "/admin/artifacts",
        json={"run": run_id, "category": "output", "record": record, "content": content},
    )
    answer.raise_for_status()
    artifact_id: str = answer.json()["id"]
    return artifact_id


def send_content(slot: dict[str, Any], content: bytes) -> httpx.Response:
    """Upload *content* the way *slot* (an answer of ``POST /api/artifacts``) asks: a form
    POST when it has ``fields``, else a PUT."""
    if slot.get("fields"):
        files = {"file": ("data.bin", content)}
        return httpx.post(slot["url"], data=slot["fields"], files=files, timeout=30)
    return httpx.put(slot["url"], content=content, timeout=30)


def multipart_body(
    fields: dict[str, str], chunks: Iterator[bytes], boundary: str
) -> Iterator[bytes]:
    """Yield an S3-style upload form: the *fields* first, then the file part (*chunks*)."""
    for key, value in fields.items():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
        ).encode()
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="data.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from chunks
    yield f"\r\n--{boundary}--\r\n".encode()


def errno_of(call: Callable[[], object]) -> int:
    """Return 0 if *call* succeeds, else the errno of the OSError it raised."""
    try:
        call()
    except OSError as exc:
        return exc.errno or -1
    return 0


def server_inputs(server: DevServer, run_id: str) -> dict[str, str]:
    """{name: checksum} of the run's input artifacts, as the server lists them (a name
    listed twice fails: nothing may be uploaded twice)."""
    records = server.run_artifacts(run_id, category="input")
    names = [record["name"] for record in records]
    assert len(names) == len(set(names)), sorted(names)
    return {record["name"]: record["checksum"] for record in records}


def tree_digests(root: Path) -> dict[str, str]:
    """{path relative to *root*: sha256} of every regular file below *root*."""
    return {
        str(path.relative_to(root)): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def refuse_direct_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``os.open`` with ``O_DIRECT`` fail as on a filesystem without it (EINVAL)."""
    real_open = os.open

    def no_direct(path: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)

"""The upload job: cp into a simvuefs mount against the official client's requests by httpx."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import httpx

from benchmarks.context import Context, size_text
from benchmarks.data import UPLOAD_RUN
from benchmarks.measure import Broken, Table, mib_per_s, timed_on

HTTPX_UPLOAD = "httpx direct upload"


def upload(ctx: Context) -> Table:
    """Upload of a large local file: cp into MNT/runs/upload/input/ (timed until cp returns,
    i.e. until the server has it) against a direct httpx upload doing the official client's
    requests (sha256, POST /api/artifacts, storage upload, PUT uploaded, attach, GET).
    The disks are synced before each timed upload: the devserver has just stored the
    previous contender's file, and its dirty pages would throttle the next one's writes."""
    size = ctx.data.sizes.upload
    table = Table("upload", f"Upload of a {size_text(size)} file", "MiB/s", HTTPX_UPLOAD)
    api = httpx.Client(
        base_url=ctx.devserver.url + "/api",
        headers={"Authorization": f"Bearer {ctx.devserver.token}"},
        timeout=600,
    )
    with api:
        response = api.get("/runs", params={"filters": f'["name == {UPLOAD_RUN}"]'})
        run_id = response.raise_for_status().json()["data"][0]["id"]
        for round_ in range(ctx.repeat):
            source, sha = ctx.data.upload_sources["httpx"]
            name = f"httpx-{round_}.bin"
            os.sync()  # each contender starts with no dirty pages of the one before
            seconds, _ = timed_on(None, _direct_upload, api, run_id, source, name)
            table.result(HTTPX_UPLOAD).add(mib_per_s(size, seconds))
            _check_uploaded(api, run_id, name, sha)
            source, sha = ctx.data.upload_sources["simvuefs"]
            name = f"simvuefs-{round_}.bin"
            with ctx.harness.mount("simvuefs", read_only=False) as mounted:
                target = mounted.root / "runs" / UPLOAD_RUN / "input" / name
                copy = ["cp", str(source), str(target)]
                os.sync()
                seconds, cpu = timed_on(mounted, subprocess.run, copy, check=True)
                table.result("simvuefs cp").add(
                    mib_per_s(size, seconds), cpu, size, mounted.peak_rss()
                )
            _check_uploaded(api, run_id, name, sha)
    return table


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _direct_upload(api: httpx.Client, run_id: str, source: Path, name: str) -> None:
    """Upload *source* as the official client does (../shared/simvue-protocol.md 4.2)."""
    body = {
        "name": name,
        "original_path": str(source),
        "size": source.stat().st_size,
        "mime_type": "application/octet-stream",
        "checksum": _sha256_file(source),
        "metadata": None,
    }
    created = api.post("/artifacts", json=body).raise_for_status().json()
    with httpx.Client(timeout=600) as storage, source.open("rb") as file:
        if created.get("fields"):
            files = {"file": (source.name, file, "application/octet-stream")}
            response = storage.post(created["url"], data=created["fields"], files=files)
        else:
            response = storage.put(created["url"], content=file)
    if response.status_code not in (200, 204):
        raise Broken(f"direct upload: storage answered {response.status_code}")
    api.put(f"/artifacts/{created['id']}", json={"uploaded": True}).raise_for_status()
    path = f"/runs/{run_id}/artifacts/{created['id']}"
    api.put(path, json={"category": "input"}).raise_for_status()
    api.get(f"/artifacts/{created['id']}").raise_for_status()


def _check_uploaded(api: httpx.Client, run_id: str, name: str, sha256: str) -> None:
    """The server verifies the declared checksum on upload; check that it is the source's."""
    found = api.get(f"/runs/{run_id}/artifacts", params={"name": name}).raise_for_status().json()
    if len(found) != 1 or found[0]["checksum"] != sha256:
        raise Broken(f"upload of {name} did not land on the server with its content")

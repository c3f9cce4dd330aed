"""The storage side: signed URLs and downloads with HTTP Range (uploads are in uploads.py).

Storage URLs need no Authorization header (the official client sends none); they carry
``expires`` (epoch seconds) and ``sig`` (HMAC of method, path and expiry), like S3
presigned URLs, and errors are S3-style XML. Bodies are streamed from disk in CHUNK_SIZE
pieces, so memory stays bounded whatever the artifact size.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from simvuefs.devserver import synthetic
from simvuefs.devserver.auth import sign, signature_matches
from simvuefs.devserver.state import ServerState

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
"""Bytes read from disk and handed to the connection at a time (downloads and uploads)."""

MAX_FIELD_BYTES = 64 * 1024
"""Longest form field kept from a POST upload (the signed fields are far shorter)."""

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
BAD_DIGEST_MESSAGE = "The SHA256 you specified did not match the calculated checksum."


class DroppedConnection(Exception):
    """Raised after a body cut short by the ``drop_after_bytes`` fault: uvicorn then closes
    the connection (the log filter in cli.py keeps this out of the error log)."""


def s3_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """Return an S3-style XML error answer."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    )
    return Response(body, status, headers=headers, media_type="application/xml")


def _expiry(state: ServerState) -> int:
    return math.ceil(time.time() + state.faults.url_lifetime(state.url_expiry))


def download_url(state: ServerState, base_url: str, artifact: dict[str, Any]) -> str:
    """Return a signed GET URL for the artifact's content, valid for the current expiry.

    With ``state.storage_url`` set, the URL points at ``<storage_url>/<sha256>`` instead: a
    plain file server (nginx, for the benchmarks) serving the blob directory. It carries the
    same query, which such a server ignores.
    """
    path = f"/storage/artifacts/{artifact['id']}"
    expires = str(_expiry(state))
    query = urlencode({"expires": expires, "sig": sign(state.secret, "GET", path, expires)})
    if state.storage_url:
        return f"{state.storage_url}/{artifact['checksum']}?{query}"
    return f"{base_url}{path}?{query}"


def upload_slot(
    state: ServerState, base_url: str, artifact_id: str, checksum: str
) -> dict[str, Any]:
    """Return the ``url`` (and, for the POST style, ``fields``) for uploading the content."""
    expires = str(_expiry(state))
    if state.upload_style == "put":
        path = f"/storage/uploads/{artifact_id}"
        query = urlencode({"expires": expires, "sig": sign(state.secret, "PUT", path, expires)})
        return {"url": f"{base_url}{path}?{query}"}
    key = f"uploads/{artifact_id}"
    checksum_b64 = base64.b64encode(bytes.fromhex(checksum)).decode("ascii")
    return {
        "url": f"{base_url}/storage/uploads",
        "fields": {
            "key": key,
            "x-amz-checksum-sha256": checksum_b64,
            "expires": expires,
            "x-amz-signature": sign(state.secret, "POST", key, checksum_b64, expires),
        },
    }


def signature_problem(
    state: ServerState, expires: str, signature: str, *parts: str
) -> Response | None:
    """Return the 403 answer for a bad or expired signature over *parts*, or None."""
    if not expires.isdigit() or not signature_matches(state.secret, signature, *parts, expires):
        return s3_error(403, "AccessDenied", "Request signature does not match")
    if time.time() >= int(expires):
        return s3_error(403, "AccessDenied", "Request has expired")
    return None


async def storage_faults(state: ServerState, where: str) -> Response | None:
    """Apply the storage fault switches: an error answer to return, or None (after any
    stall configured for *where*)."""
    status = state.faults.storage_error()
    if status:
        return s3_error(
            status, "ServiceUnavailable" if status == 503 else "InternalError", "Injected fault"
        )
    if delay := state.faults.stall_for(where):
        await asyncio.sleep(delay)
    return None


async def presigned_url_problem(
    state: ServerState, request: Request, signed_method: str
) -> Response | None:
    """Return the refusal for a request on a URL presigned for *signed_method* (bad signature,
    expiry, injected storage fault), or None after any stall configured before storage
    answers. HEAD uses the GET signature."""
    problem = signature_problem(
        state,
        request.query_params.get("expires", ""),
        request.query_params.get("sig", ""),
        signed_method,
        request.url.path,
    )
    if problem is None:
        problem = await storage_faults(state, "storage_before")
    return problem


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """Interpret a Range header for content of *size* bytes.

    Returns ``(start, end)`` (inclusive) to serve 206, None to serve the whole content with
    200 (no header, several ranges, or syntax this server ignores, as RFC 9110 allows), or
    the string ``"unsatisfiable"`` for 416.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


class BlobResponse(Response):
    """Streams ``length`` bytes of a blob from ``offset``, applying the body faults.

    Counts the bytes handed to the connection in ``stats.bytes_served``; stops reading when
    the client disconnects.
    """

    def __init__(
        self,
        state: ServerState,
        path: Path,
        offset: int,
        length: int,
        status: int,
        headers: dict[str, str],
        media_type: str,
        *,
        chunked: bool = False,
    ) -> None:
        super().__init__(None, status, headers, media_type)
        if chunked:  # no Content-Length: the server sends the body chunked
            del self.headers["content-length"]
        else:
            self.headers["content-length"] = str(length)
        self._state = state
        self._path = path
        self._offset = offset
        self._length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        complete: bool | None = None  # stays None when the client goes away
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            complete = await self._send_body(send)
            group.cancel_scope.cancel()
        if complete:
            await send({"type": "http.response.body", "body": b""})
        elif complete is False:
            raise DroppedConnection("connection dropped by the drop_after_bytes fault")

    async def _send_body(self, send: Send) -> bool:
        """Send the body; return False if the drop_after_bytes fault cut it short."""
        faults = self._state.faults
        stall = faults.stall_for("storage_middle")
        stall_at = self._length // 2 if stall else -1
        drop_at = faults.drop_limit()
        sent = 0
        file = await run_in_threadpool(self._path.open, "rb")
        try:
            await run_in_threadpool(file.seek, self._offset)
            while sent < self._length:
                if sent == stall_at:
                    await asyncio.sleep(stall)
                if drop_at is not None and sent >= drop_at:
                    faults.injected["drop_after_bytes"] += 1
                    return False
                want = min(CHUNK_SIZE, self._length - sent)
                for limit in (stall_at, drop_at):
                    if limit is not None and limit > sent:
                        want = min(want, limit - sent)
                chunk = await run_in_threadpool(file.read, want)
                if not chunk:
                    raise OSError(f"blob {self._path.name} is shorter than expected")
                flip = faults.corruption(self._offset + sent, len(chunk))
                if flip is not None:
                    chunk = chunk[:flip] + bytes([chunk[flip] ^ 0xFF]) + chunk[flip + 1 :]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                self._state.stats.bytes_served += len(chunk)
        finally:
            file.close()  # not in a thread: this also runs when the task is cancelled
        return True


async def download(state: ServerState, request: Request) -> Response:
    """``GET /storage/artifacts/{id}?expires=&sig=``: the content, whole or a Range."""
    artifact_id = request.path_params["artifact_id"]
    problem = await presigned_url_problem(state, request, "GET")
    if problem is not None:
        return problem
    artifact = state.store.get_artifact(artifact_id)
    if artifact is None:
        artifact = synthetic.artifact(artifact_id, state.faults.extra_artifacts)
        if artifact is not None and not state.store.has_blob(artifact["checksum"]):
            state.store.write_blob(artifact["checksum"], [])  # the empty content
    path = state.store.blob_path(artifact["checksum"]) if artifact else None
    try:
        size = (await run_in_threadpool(path.stat)).st_size if path else -1
    except FileNotFoundError:
        size = -1
    if artifact is None or path is None or size < 0:
        return s3_error(404, "NoSuchKey", "The specified key does not exist.")
    state.stats.storage_gets += 1
    headers = {
        "accept-ranges": "bytes",
        "etag": f'"{artifact["checksum"]}"',
        "cache-control": "no-transform",
    }
    chunked = state.faults.chunked_body()
    if chunked:
        del headers["accept-ranges"]
    wanted = (
        None
        if chunked or state.faults.range_ignored()
        else parse_range(request.headers.get("range"), size)
    )
    if wanted == "unsatisfiable":
        return s3_error(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
            {"content-range": f"bytes */{size}"},
        )
    media_type = artifact.get("mime_type") or "application/octet-stream"
    log.debug("GET %s (%d bytes), range %s", artifact_id, size, wanted)
    if isinstance(wanted, tuple):
        start, end = wanted
        state.stats.range_gets += 1
        headers["content-range"] = f"bytes {start}-{end}/{size}"
        return BlobResponse(state, path, start, end - start + 1, 206, headers, media_type)
    return BlobResponse(state, path, 0, size, 200, headers, media_type, chunked=chunked)


def routes(state: ServerState) -> list[Route]:
    """Return the download route (no Authorization: the URLs are signed)."""

    async def get(request: Request) -> Response:
        return await download(state, request)

    return [Route("/storage/artifacts/{artifact_id}", get, methods=["GET"])]

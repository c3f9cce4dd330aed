"""Storage uploads: presigned PUT of the raw body, or S3-style multipart POST.

The body is streamed into a temporary file while hashed, so memory stays bounded whatever
the size; the content becomes ``blobs/<sha256>`` only if its sha256 matches the declared
checksum, otherwise the answer is S3's ``BadDigest`` (400 with XML); content over
``--max-upload-size`` gets S3's ``EntityTooLarge`` (400) instead.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import IO, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from simvuefs.devserver.multipart import MultipartError, PartEnd, PartStart, boundary_from
from simvuefs.devserver.multipart import iter_parts as iter_multipart
from simvuefs.devserver.state import ServerState
from simvuefs.devserver.storage import (
    CHUNK_SIZE,
    presigned_url_problem,
    s3_error,
    signature_problem,
    storage_faults,
)

log = logging.getLogger(__name__)

MAX_FIELD_BYTES = 64 * 1024
"""Longest form field kept from a POST upload (the signed fields are far shorter)."""

BAD_DIGEST_MESSAGE = "The SHA256 you specified did not match the calculated checksum."
TOO_LARGE_MESSAGE = "Your proposed upload exceeds the maximum allowed size"
_NO_ARTIFACT = "The artifact of this upload does not exist."


class Spool:
    """Incoming content: written to a temporary file in large batches while hashed."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._file: IO[bytes]
        self._file, self.path = state.store.open_spool()
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._pending += data
        self.size += len(data)
        if len(self._pending) >= CHUNK_SIZE:
            await self._flush()

    async def _flush(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        await run_in_threadpool(self._write_now, data)

    def _write_now(self, data: bytes) -> None:
        self._hash.update(data)
        self._file.write(data)

    async def finish(self) -> str:
        """Write what is pending, close the file and return the sha256 (hex)."""
        await self._flush()
        await run_in_threadpool(self._file.close)
        return self._hash.hexdigest()

    async def store_if(self, expected: str) -> Response | None:
        """Keep the content as the blob for *expected*, or return the refusal (EntityTooLarge
        over ``max_upload_size``, else BadDigest)."""
        actual = await self.finish()
        limit = self._state.max_upload_size
        if limit and self.size > limit:
            self.discard()
            self._state.stats.uploads_rejected += 1
            return s3_error(400, "EntityTooLarge", TOO_LARGE_MESSAGE)
        if actual != expected or self._state.faults.bad_digest():
            self.discard()
            self._state.stats.uploads_rejected += 1
            return s3_error(400, "BadDigest", BAD_DIGEST_MESSAGE)
        self._state.store.commit_blob(self.path, actual)
        self._state.stats.uploads += 1
        self._state.stats.upload_bytes += self.size
        return None

    def discard(self) -> None:
        """Drop the temporary file (after a failure or a rejected digest)."""
        self._file.close()
        self.path.unlink(missing_ok=True)


async def _drain(chunks: AsyncIterator[Any]) -> None:
    """Read and discard the rest of a request body.

    Done before refusing an upload: answering while the client is still sending would make
    uvicorn close the connection, and the client would see a reset instead of the status.
    """
    try:
        async for _ in chunks:
            pass
    except MultipartError:
        pass


async def upload_put(state: ServerState, request: Request) -> Response:
    """``PUT /storage/uploads/{id}?expires=&sig=``: the raw body is the content."""
    artifact_id = request.path_params["artifact_id"]
    problem = await presigned_url_problem(state, request, "PUT")
    if problem is None:
        artifact = state.store.get_artifact(artifact_id)
        if artifact is not None:
            return await _receive_put(state, request, artifact)
        problem = s3_error(404, "NoSuchUpload", _NO_ARTIFACT)
    await _drain(request.stream())
    return problem


async def _receive_put(state: ServerState, request: Request, artifact: dict[str, Any]) -> Response:
    spool = Spool(state)
    try:
        async for chunk in request.stream():
            await spool.write(chunk)
        rejected = await spool.store_if(artifact["checksum"])
    except BaseException:
        spool.discard()
        raise
    log.debug(
        "PUT upload of %s: %d bytes, %s",
        artifact["id"],
        spool.size,
        "rejected" if rejected else "stored",
    )
    return rejected or Response(status_code=200, headers={"etag": f'"{artifact["checksum"]}"'})


async def upload_post(state: ServerState, request: Request) -> Response:
    """``POST /storage/uploads``: S3-style form (the signed fields, then ``file``); 204.

    Parts before ``file`` are the fields (checked when ``file`` starts); the first ``file``
    part is the content; anything after it is ignored, as S3 does.
    """
    try:
        boundary = boundary_from(request.headers.get("content-type", ""))
    except MultipartError as exc:
        await _drain(request.stream())
        return s3_error(400, "MalformedPOSTRequest", str(exc))
    parts = iter_multipart(request.stream(), boundary)
    fields: dict[str, str] = {}
    field: PartStart | None = None  # the field part being read
    value = bytearray()
    spool: Spool | None = None
    try:
        async for event in parts:
            if isinstance(event, PartStart) and event.name == "file":
                problem = await _check_post_fields(state, fields)
                if problem is not None:
                    await _drain(parts)
                    return problem
                spool = Spool(state)
                break
            if isinstance(event, PartStart):
                field, value = event, bytearray()
            elif isinstance(event, PartEnd) and field is not None:
                fields[field.name] = value.decode("utf-8", "replace")
                field = None
            elif isinstance(event, bytes) and len(value) + len(event) <= MAX_FIELD_BYTES:
                value += event
        if spool is None:
            return s3_error(400, "InvalidArgument", "POST requires a file part after the fields.")
        async for event in parts:
            if isinstance(event, PartEnd):
                break
            if isinstance(event, bytes):
                await spool.write(event)
        await _drain(parts)  # parts after the file are ignored, as S3 does
        rejected = await spool.store_if(base64.b64decode(fields["x-amz-checksum-sha256"]).hex())
    except MultipartError as exc:
        if spool is not None:
            spool.discard()
        return s3_error(400, "MalformedPOSTRequest", str(exc))
    except BaseException:
        if spool is not None:
            spool.discard()
        raise
    log.debug(
        "POST upload of %s: %d bytes, %s",
        fields.get("key"),
        spool.size,
        "rejected" if rejected else "stored",
    )
    return rejected or Response(status_code=204)


async def _check_post_fields(state: ServerState, fields: dict[str, str]) -> Response | None:
    """Return the answer refusing a POST upload with these form fields, or None."""
    key = fields.get("key", "")
    checksum_b64 = fields.get("x-amz-checksum-sha256", "")
    problem = signature_problem(
        state,
        fields.get("expires", ""),
        fields.get("x-amz-signature", ""),
        "POST",
        key,
        checksum_b64,
    )
    if problem is None:  # the signature covers the checksum: it is one we issued
        problem = await storage_faults(state, "storage_before")
    if problem is None and state.store.get_artifact(key.removeprefix("uploads/")) is None:
        problem = s3_error(404, "NoSuchUpload", _NO_ARTIFACT)
    return problem


def routes(state: ServerState) -> list[Route]:
    """Return the upload routes (no Authorization: the URL or the form fields are signed)."""

    async def put(request: Request) -> Response:
        try:
            return await upload_put(state, request)
        except ClientDisconnect:
            return Response(status_code=400)

    async def post(request: Request) -> Response:
        try:
            return await upload_post(state, request)
        except ClientDisconnect:
            return Response(status_code=400)

    return [
        Route("/storage/uploads/{artifact_id}", put, methods=["PUT"]),
        Route("/storage/uploads", post, methods=["POST"]),
    ]

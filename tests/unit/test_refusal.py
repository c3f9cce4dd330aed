"""Which failed upload steps are final (simvuefs.write.refusal), and the errno close() gets.

The exceptions are built as the transport builds them from the server's answers
(``transport.api_error`` / ``storage_error``), so the S3 codes are read where they are.
"""

from __future__ import annotations

import errno

import pytest

from simvuefs.backends.transport import storage_error
from simvuefs.errors import (
    AuthError,
    DeadlineExceeded,
    IntegrityError,
    LocalError,
    NotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    StatusError,
    TransportError,
    UploadRefused,
    errno_for,
)
from simvuefs.write.refusal import final_errno

WHAT = "POST http://storage.test/uploads"


def s3(status: int, code: str) -> StatusError:
    body = f"<Error><Code>{code}</Code><Message>details</Message></Error>".encode()
    return storage_error(status, body, WHAT, upload=True)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # final refusals of the API
        (StatusError("name rejected", status=422), errno.EINVAL),
        (StatusError("bad request", status=400), errno.EINVAL),
        (AuthError("not your run", status=403), errno.EACCES),
        (NotFound("no such run", status=404), errno.ENOENT),
        (StatusError("gone", status=410), errno.ENOENT),
        (StatusError("too large", status=413), errno.EFBIG),
        (StatusError("conflict", status=409), errno.EIO),
        (StatusError("method not allowed", status=405), errno.EIO),
        # final refusals of storage
        (s3(400, "EntityTooLarge"), errno.EFBIG),
        (s3(413, "RequestEntityTooLarge"), errno.EFBIG),
        (s3(400, "InvalidArgument"), errno.EIO),
        # transient: the token, a timeout, slow down
        (AuthError("token expired", status=401), None),
        (StatusError("request timeout", status=408), None),
        (RateLimited("slow down", retry_after=3.0), None),
        # transient: storage refused the URL or the bytes in transit
        (s3(403, "AccessDenied"), None),
        (s3(400, "ExpiredToken"), None),
        (s3(400, "BadDigest"), None),
        (s3(400, "RequestTimeout"), None),
        (s3(400, "IncompleteBody"), None),
        (s3(404, "NoSuchUpload"), None),
        # transient: everything that is not a 4xx
        (ServerError("down", status=503), None),
        (TransportError("connection refused"), None),
        (DeadlineExceeded("too slow"), None),
        (ProtocolError("not JSON"), None),
        (IntegrityError("bytes differ"), None),
        (LocalError("spool unreadable", errno=errno.EIO), None),
        (OSError(errno.EIO, "disk"), None),
    ],
    ids=lambda value: value if isinstance(value, int | None) else f"{type(value).__name__}",
)
def test_final_refusals_and_their_errno(exc: BaseException, expected: int | None) -> None:
    assert final_errno(exc) == expected


def test_a_refusal_carries_its_errno_to_close() -> None:
    refused = UploadRefused("the server refused it", errno=errno.EFBIG)
    assert errno_for(refused) == errno.EFBIG

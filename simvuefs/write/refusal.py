"""Which failed uploads are final: refusals that no retry will change.

An upload step (create, storage upload, mark, attach, read back) that fails with a 4xx is
final, except:

- 401 (the token; a new one may be configured), 408 (a timeout) and 429 (slow down: see
  ``Retry-After``), from the API or from storage;
- a storage refusal of the presigned URL (:class:`~simvuefs.errors.UrlExpired`: the next
  attempt gets a new one) or of the bytes as they arrived (:data:`TRANSIENT_STORAGE_CODES`,
  e.g. S3's ``BadDigest``: the next attempt sends them again, to a new artifact).

Everything else (5xx, connection errors, deadlines, unreadable answers, local errors) is
transient and retried with backoff. A final refusal gets the errno that ``close()``
returns (:func:`final_errno`):

==============================================  ==========
refusal                                          errno
==============================================  ==========
413, or storage's ``EntityTooLarge``             EFBIG
400 or 422 from the API (a name or field it      EINVAL
rejects)
403 from the API (a run that is not the user's)  EACCES
404 or 410 from the API (a run that is gone)     ENOENT
any other final 4xx                              EIO
==============================================  ==========
"""

from __future__ import annotations

import errno

from simvuefs.errors import StatusError, UploadRejected, UrlExpired

TRANSIENT_STATUSES = frozenset({401, 408, 429})
"""4xx statuses that a later attempt may not get."""
TRANSIENT_STORAGE_CODES = frozenset(
    {
        "BadDigest",
        "InvalidDigest",
        "XAmzContentSHA256Mismatch",
        "IncompleteBody",
        "RequestTimeout",
        "NoSuchUpload",
    }
)
"""S3 error codes of a storage 4xx about the bytes in transit or the upload slot: a new
attempt (a new artifact, the bytes sent again) may succeed."""
TOO_LARGE_CODES = frozenset({"EntityTooLarge", "MaxMessageLengthExceeded"})
"""S3 error codes of content over the storage's single-upload limit."""


def storage_code(exc: StatusError) -> str:
    """The S3 error code of a storage refusal ("" if it gave none): the transport puts it
    first in the detail, as ``Code: Message``."""
    head, _, _ = exc.detail.partition(":")
    return head if head.isalnum() else ""


def final_errno(exc: BaseException) -> int | None:
    """The errno of a refusal no retry will change, or None for a failure worth retrying
    (module docstring)."""
    if not isinstance(exc, StatusError) or isinstance(exc, UrlExpired):
        return None
    status = exc.status
    if not 400 <= status < 500 or status in TRANSIENT_STATUSES:
        return None
    if isinstance(exc, UploadRejected):
        code = storage_code(exc)
        if code in TRANSIENT_STORAGE_CODES:
            return None
        return errno.EFBIG if status == 413 or code in TOO_LARGE_CODES else errno.EIO
    if status == 413:
        return errno.EFBIG
    if status in (400, 422):
        return errno.EINVAL
    if status == 403:
        return errno.EACCES
    if status in (404, 410):
        return errno.ENOENT
    return errno.EIO

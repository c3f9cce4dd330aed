"""The exceptions simvuefs raises below the FUSE layer, and their errno.

Lower layers (client, reader, uploader) raise only these; ``fs.py`` turns them into
``pyfuse3.FUSEError`` with :func:`errno_for`, in one place. Messages never contain the token
or a signed URL's query string.

    SimvueError
    ├── ConfigError          no usable URL/token/option; the message says what and where
    ├── TransportError       the server could not be reached, or the connection broke
    │   └── DeadlineExceeded the operation's deadline passed (a stalled server)
    ├── ProtocolError        the server answered something we cannot understand
    ├── IntegrityError       downloaded bytes do not match the artifact's sha256
    ├── LocalError           the local side refused (spool full, name in use); carries errno
    ├── UploadRefused        the server refused an upload for good (a final 4xx); carries errno
    └── StatusError          the server answered an unexpected HTTP status
        ├── AuthError        401/403 from the API: bad or expired token, no permission
        ├── NotFound         404: no such run or artifact
        ├── ServerError      5xx (after retries for 502/503/504)
        ├── UrlExpired       storage refused a presigned URL (expired or bad signature)
        ├── UploadRejected   storage refused uploaded content (e.g. BadDigest, too large)
        └── RateLimited      429: the server asks to slow down (for longer than the deadline)
"""

from __future__ import annotations

import errno


class SimvueError(Exception):
    """Base class of every error simvuefs raises on purpose."""


class ConfigError(SimvueError):
    """The configuration is missing or invalid; the message is one line for the user."""


class TransportError(SimvueError):
    """The server could not be reached, or the connection failed mid-request."""


class DeadlineExceeded(TransportError):
    """The operation did not finish within its deadline."""


class ProtocolError(SimvueError):
    """The server's answer could not be parsed or lacked a required field."""


class IntegrityError(SimvueError):
    """Content read from storage does not match the artifact's checksum."""


class LocalError(SimvueError):
    """The local side refused the operation (spool full, name in use, file already committed).

    *errno* is what the FUSE caller sees.
    """

    def __init__(self, message: str, *, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


class UploadRefused(SimvueError):
    """The server refused an upload for good: a final 4xx (``write/refusal.py``) that no
    retry will change, such as a name it rejects, a run that is not the user's or content
    over its size limit. The file stays in the spool, marked failed, until ``simvuefs
    pending retry``. *errno* is what ``close()`` returns.
    """

    def __init__(self, message: str, *, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


class StatusError(SimvueError):
    """The server answered with an HTTP status the caller did not expect.

    *url* must already be stripped of its query string (signed URLs carry secrets).
    """

    def __init__(self, message: str, *, status: int, url: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.detail = detail


class AuthError(StatusError):
    """401 or 403 from the API."""


class NotFound(StatusError):
    """404 from the API."""


class ServerError(StatusError):
    """A 5xx answer that retries did not cure."""


class UrlExpired(StatusError):
    """Storage refused a presigned URL; fetch a fresh one from the API."""


class UploadRejected(StatusError):
    """Storage refused the uploaded content."""


class RateLimited(StatusError):
    """429 from the API or storage that retries within the deadline did not cure.

    *retry_after* is how many seconds the server asked to wait (``Retry-After``), if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        url: str = "",
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, url=url, detail=detail)
        self.retry_after = retry_after


def errno_for(exc: BaseException) -> int:
    """Return the errno a FUSE caller should see for *exc* (EIO when nothing fits better)."""
    if isinstance(exc, LocalError | UploadRefused):
        return exc.errno
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, AuthError):
        return errno.EACCES
    if isinstance(exc, DeadlineExceeded):
        return errno.ETIMEDOUT
    if isinstance(exc, RateLimited):
        return errno.EAGAIN
    if isinstance(exc, UploadRejected):
        if exc.status == 413:
            return errno.EFBIG
        if exc.status == 507:
            return errno.ENOSPC
        return errno.EIO
    if isinstance(exc, StatusError) and exc.status == 507:
        return errno.ENOSPC
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES):
        return exc.errno
    return errno.EIO

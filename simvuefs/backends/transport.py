"""HTTP plumbing under :mod:`simvuefs.backends.client`: the configured httpx client,
deadlines, retries, status-to-exception mapping and streamed upload bodies.

Invariants:

- The token is never a default header of the ``httpx.AsyncClient``: the client adds it to API
  requests only, so presigned storage URLs never see it.
- Nothing here lets an ``httpx`` exception or ``trio.TooSlowError`` escape: they become
  :class:`~simvuefs.errors.TransportError` / :class:`~simvuefs.errors.DeadlineExceeded`.
- URLs in messages go through :func:`display_url`, which drops the query string (a signed
  URL's query is a secret) and any user and password.
- Redirects are followed below the client (``backends/redirects.py``: never taking the
  token to another origin), and TLS is set up there too (``backends/tls.py``: the
  certificate settings, a one-line message for a certificate that fails verification).

Retries (:func:`send`, :func:`fetch`, :class:`RetryPolicy`):

- Retried: 429, 502, 503, 504 and :data:`RETRYABLE_ERRORS` (refused, reset or stalled
  connections: a server restarting). Every other answer goes back to the caller at once.
- At most ``policy.attempts`` requests per call; between them, the server's
  ``Retry-After`` (delay-seconds or an HTTP date) or else our backoff (``base_delay``
  doubling to ``max_delay``, times a random factor in [0.5, 1)).
- Never past the caller's deadline (``trio.current_effective_deadline()``): a wait that
  would leave less than ``min_attempt_seconds`` for the next attempt, or a ``Retry-After``
  longer than ``max_retry_after``, ends the retries at once, and the last answer (or error)
  is the call's.
- A 429 with ``Retry-After`` holds the whole origin (scheme, host, port) for every call of
  the client (:class:`Throttle`): until then, a call waits if its deadline allows, and
  otherwise raises :class:`~simvuefs.errors.RateLimited` without sending anything.
"""

from __future__ import annotations

import email.utils
import errno
import fcntl
import functools
import json
import logging
import math
import mmap
import os
import random
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpcore
import httpx
import trio

from simvuefs import __version__
from simvuefs.backends.redirects import FollowRedirects
from simvuefs.backends.storagepool import BODY_EXTENSION, StorageBody
from simvuefs.backends.tls import Network
from simvuefs.config import MIB, Settings
from simvuefs.errors import (
    AuthError,
    DeadlineExceeded,
    IntegrityError,
    NotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    SimvueError,
    StatusError,
    TransportError,
    UploadRejected,
    UrlExpired,
)
from simvuefs.inthread import InThread

log = logging.getLogger(__name__)

USER_AGENT = f"simvuefs/{__version__}"
# Enough for read-ahead parts of several files (up to --read-streams each, on connections
# of their own) plus listings running side by side.
MAX_CONNECTIONS = 64
MAX_KEEPALIVE = 16
# An API answer larger than this is not a Simvue listing page but a broken server.
MAX_API_BODY = 64 * MIB
# Error bodies are only read for their message.
MAX_ERROR_BODY = 64 * 1024
# Chunk size for reading files being uploaded (one thread hop per chunk).
UPLOAD_CHUNK = 1 * MIB
PROGRESS_INTERVAL = 5.0
"""Seconds between progress lines of a long upload (the first comes after as long)."""
# httpcore reads sockets 64 KiB at a time, and every read costs several buffer copies and
# trio checkpoints. 1 MiB reads measured 0.34x -> 0.6x of curl's throughput for a 256 MiB
# download from the devserver on loopback (design guide, pyfuse3 pitfall 17).
SOCKET_READ_BYTES = 1 * MIB
SINK_READ_BYTES = 64 * 1024
"""One socket read of a body fed to a :class:`BodySink` (through the storage pool)."""
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Connection failures and stalls worth another attempt; other httpx errors are final.
RETRYABLE_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
# S3 error codes that mean "this presigned URL is no longer (or never was) valid".
_URL_REFUSED_CODES = frozenset(
    {"AccessDenied", "ExpiredToken", "SignatureDoesNotMatch", "RequestExpired", "InvalidToken"}
)
_XML_TAG = re.compile(r"<(Code|Message)>([^<]{0,500})</\1>")


@dataclass
class Counters:
    """Mutable request counters shared by one client (a snapshot is ``ClientStats``)."""

    requests: int = 0
    retries: int = 0
    bytes_downloaded: int = 0
    bytes_uploaded: int = 0
    url_refreshes: int = 0
    connections_opened: int = 0

    def connection_opened(self) -> None:
        """Count one connection opened (API or storage; a reused one is not counted)."""
        self.connections_opened += 1


Origin = tuple[str, str, int | None]


class Throttle:
    """Until when each origin (scheme, host, port) asked, with a 429 and ``Retry-After``,
    not to be sent requests. Shared by every call of one client, so that concurrent calls,
    and a program retrying a failed read at once, wait or fail without asking again.

    Times are trio's clock; an entry is dropped once it has passed.
    """

    def __init__(self) -> None:
        self._until: dict[Origin, float] = {}

    def hold(self, url: httpx.URL) -> float:
        """Return the seconds left before *url*'s origin may be asked again (0: now)."""
        origin = _origin(url)
        until = self._until.get(origin)
        if until is None:
            return 0.0
        left = until - trio.current_time()
        if left <= 0:
            del self._until[origin]
            return 0.0
        return left

    def defer(self, url: httpx.URL, seconds: float) -> None:
        """Hold *url*'s origin for *seconds* from now (a later hold already set stays)."""
        origin = _origin(url)
        until = trio.current_time() + seconds
        if until > self._until.get(origin, -math.inf):
            self._until[origin] = until


def _origin(url: httpx.URL) -> Origin:
    return (url.scheme, url.host, url.port)


@dataclass(frozen=True)
class RetryPolicy:
    """How one client retries (module docstring, "Retries"): at most *attempts* requests
    per call; waits from ``Retry-After`` (up to *max_retry_after*) or from :meth:`backoff`;
    *throttle*, the origins a 429 holds, shared by every call that uses this policy."""

    attempts: int
    base_delay: float = 0.25
    max_delay: float = 4.0
    max_retry_after: float = 60.0
    # A retry is not worth starting with less time than this left before the deadline.
    min_attempt_seconds: float = 0.25
    throttle: Throttle = field(default_factory=Throttle, compare=False, repr=False)

    def backoff(self, retry: int) -> float:
        """Return our pause before retry number *retry* (0-based), when the server gave no
        ``Retry-After``: ``base_delay * 2**retry`` capped at ``max_delay``, times a random
        factor in [0.5, 1) (so that clients do not come back in step)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0**retry)
        return ceiling * random.uniform(0.5, 1.0)


class BodySink(Protocol):
    """Takes an answer's body chunk by chunk instead of :func:`fetch` keeping it (a large
    listing decoded as it arrives): ``feed`` each chunk in order, then ``finish``."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class Reply:
    """A fully read API answer (its body empty when a :class:`BodySink` took it)."""

    status: int
    headers: httpx.Headers
    body: bytes
    what: str


@asynccontextmanager
async def open_http(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None = None,
    counters: Counters | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """Yield the ``httpx.AsyncClient`` for *settings* (no Authorization default header).

    Under it, :class:`~simvuefs.backends.redirects.FollowRedirects` over
    :class:`~simvuefs.backends.tls.Network` (TLS settings, proxies, the storage connection
    pool; connections opened counted in *counters*) or over *transport*, which replaces the
    network (tests pass an ``httpx.MockTransport``). Raises ConfigError for certificate
    files OpenSSL cannot load.
    """
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.request_timeout,
    )
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE)
    # A class constant of httpcore's HTTP/1.1 connection: process-wide, and idempotent.
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = SOCKET_READ_BYTES
    if transport is None:
        on_connect = (counters or Counters()).connection_opened
        network: httpx.AsyncBaseTransport = Network(settings, limits, on_connect)
    else:
        network = transport
    async with httpx.AsyncClient(
        headers={"User-Agent": USER_AGENT},
        timeout=timeout,
        transport=FollowRedirects(network),
        trust_env=False,  # the environment's proxies and CA bundles: tls.Network
    ) as http:
        yield http


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Run the body within *seconds*; raise DeadlineExceeded naming *what* when it expires.

    A caller's tighter cancel scope still applies (and :func:`send` stops retrying before it).
    """
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise DeadlineExceeded(f"{what}: no answer within {seconds:g} s") from None


def display_url(url: httpx.URL | str) -> str:
    """Return *url* without user, password, query string and fragment, safe for messages
    and logs.

    Every request is described with it (:func:`describe`), so a parsed URL without user
    or password is cut at its query instead of being parsed again (a third of a listing's
    URL work): in a parsed URL, ``?`` and ``#`` only start the query and the fragment.
    """
    parsed = httpx.URL(url) if isinstance(url, str) else url
    if parsed.userinfo:
        return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))
    return str(parsed).partition("#")[0].partition("?")[0]


def resolve_url(base: str, url: str) -> httpx.URL:
    """Return *url* (absolute, or relative to *base*) as an absolute, parsed URL (a request
    built with it is not parsed again).

    Raises ProtocolError (naming no query string) when the server sent an unusable URL.
    """
    try:
        return httpx.URL(base).join(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ProtocolError(f"the server sent an unusable URL ({exc})") from None


def describe(request: httpx.Request) -> str:
    """Return ``"METHOD url-without-query"`` for messages."""
    return f"{request.method} {display_url(request.url)}"


def transport_error(exc: httpx.HTTPError | httpx.InvalidURL, what: str) -> SimvueError:
    """Map an httpx exception to the simvuefs error for *what*."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"{what}: timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.DecodingError | httpx.InvalidURL):
        return ProtocolError(f"{what}: {reason}")
    return TransportError(f"{what}: {reason}")


def _next_pause(policy: RetryPolicy, retry: int, advised: float | None) -> float | None:
    """Return the pause before retry number *retry* (1-based), or None to give up now.

    *advised* is the server's ``Retry-After`` in seconds, if it sent one. Gives up when the
    attempts are used, when *advised* exceeds ``policy.max_retry_after``, or when the pause
    would leave the retry too little time before the deadline (the caller then reports the
    real failure at once rather than a bare DeadlineExceeded later).
    """
    if retry >= policy.attempts:
        return None
    if advised is not None and advised > policy.max_retry_after:
        return None
    pause = policy.backoff(retry - 1) if advised is None else advised
    return pause if _fits(policy, pause) else None


def _fits(policy: RetryPolicy, pause: float) -> bool:
    """True if an attempt after *pause* seconds still has its minimum time before the
    deadline."""
    latest = trio.current_effective_deadline() - policy.min_attempt_seconds
    return trio.current_time() + pause < latest


async def _await_turn(policy: RetryPolicy, request: httpx.Request, what: str) -> None:
    """Wait while a 429 holds *request*'s origin (:class:`Throttle`); raise RateLimited at
    once when the hold outlasts the deadline."""
    hold = policy.throttle.hold(request.url)
    if hold <= 0:
        return
    if not _fits(policy, hold):
        raise RateLimited(
            f"{what}: the server asked for no requests during {hold:.1f} s more "
            "(HTTP 429, Retry-After), longer than this operation may wait",
            url=display_url(request.url),
            retry_after=hold,
        )
    log.debug("%s: waiting %.2f s as the server asked (HTTP 429, Retry-After)", what, hold)
    await trio.sleep(hold)


async def send(
    http: httpx.AsyncClient,
    build: Callable[[], httpx.Request],
    policy: RetryPolicy,
    counters: Counters,
    *,
    follow_redirects: bool = False,
) -> httpx.Response:
    """Send the request *build* makes and return the open (streamed) response.

    *build* is called once per attempt, so request bodies start over on every retry.
    :data:`RETRYABLE_STATUSES` and :data:`RETRYABLE_ERRORS` are retried as the module
    docstring says ("Retries"); the last retryable answer is returned as is. The caller
    must close the response.

    Raises:
        TransportError: the connection failed on every attempt.
        DeadlineExceeded: the last attempt timed out.
        RateLimited: a 429 holds the origin past the deadline (nothing was sent).
        ProtocolError: the URL is invalid.
    """
    retry = 0
    while True:
        try:
            request = build()
        except httpx.InvalidURL as exc:
            raise ProtocolError(f"cannot build a request: {exc}") from None
        what = describe(request)
        await _await_turn(policy, request, what)
        counters.requests += 1
        try:
            response = await http.send(request, stream=True, follow_redirects=follow_redirects)
        except RETRYABLE_ERRORS as exc:
            retry += 1
            pause = _next_pause(policy, retry, None)
            if pause is None:
                raise transport_error(exc, what) from None
            log.debug("%s: %s; retry %d in %.2f s", what, type(exc).__name__, retry, pause)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, what) from None
        else:
            if response.status_code not in RETRYABLE_STATUSES:
                return response
            advised = retry_after(response.headers)
            if response.status_code == 429 and advised is not None:
                policy.throttle.defer(response.request.url, min(advised, policy.max_retry_after))
            retry += 1
            pause = _next_pause(policy, retry, advised)
            if pause is None:
                return response
            await response.aclose()
            log.debug("%s: status %d; retry %d in %.2f s", what, response.status_code, retry, pause)
        counters.retries += 1
        await trio.sleep(pause)


async def fetch(
    http: httpx.AsyncClient,
    build: Callable[[], httpx.Request],
    policy: RetryPolicy,
    counters: Counters,
    *,
    limit: int = MAX_API_BODY,
    sink: Callable[[str], BodySink] | None = None,
) -> Reply:
    """Send like :func:`send` and read the whole body (at most *limit* bytes).

    With *sink*, the body of a 200 answer goes to ``sink(what)``, a new sink per attempt,
    chunk by chunk, and the reply's body is empty; other answers are read as without it.
    A connection that breaks while the body is read is retried like a failed request (a
    sink then starts over: the caller's sink factory drops what the last one took).
    """
    retry = 0
    while True:
        response = await send(http, build, policy, counters)
        what = describe(response.request)
        try:
            if sink is not None and response.status_code == 200:
                await read_into(response, limit, what, sink(what))
                body = b""
            else:
                body = await read_capped(response, limit, what)
        except TransportError:
            retry += 1
            pause = _next_pause(policy, retry, None)
            if pause is None:
                raise
        else:
            return Reply(response.status_code, response.headers, body, what)
        finally:
            await response.aclose()
        counters.retries += 1
        await trio.sleep(pause)


async def read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """Read and decode *response*'s body; ProtocolError beyond *limit* bytes."""
    parts: list[bytes] = []
    total = 0
    try:
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > limit:
                raise ProtocolError(f"{what}: answer larger than {limit} bytes")
            parts.append(chunk)
    except httpx.HTTPError as exc:
        raise transport_error(exc, what) from None
    return b"".join(parts)


async def read_into(response: httpx.Response, limit: int, what: str, sink: BodySink) -> None:
    """Feed *response*'s body to *sink* as it arrives, then finish it; ProtocolError beyond
    *limit* bytes (or from the sink)."""
    total = 0
    try:
        async with aclosing(_body_chunks(response)) as chunks:
            async for chunk in chunks:
                total += len(chunk)
                if total > limit:
                    raise ProtocolError(f"{what}: answer larger than {limit} bytes")
                sink.feed(chunk)
    except httpx.HTTPError as exc:
        raise transport_error(exc, what) from None
    sink.finish()


async def _body_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """*response*'s body, in socket reads of at most :data:`SINK_READ_BYTES` when the
    storage pool reads it and it is not content-encoded (a socket read of httpx's can bring
    a whole listing at once); else as httpx decodes it."""
    body = response.extensions.get(BODY_EXTENSION)
    if (
        isinstance(body, StorageBody)
        and response.headers.get("Content-Encoding", "identity") == "identity"
    ):
        while chunk := await body.receive(SINK_READ_BYTES):
            yield chunk
    else:
        async for chunk in response.aiter_bytes():
            yield chunk


def parse_json(body: bytes, what: str) -> object:
    """Decode a JSON body; ProtocolError (never JSONDecodeError) when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what}: the answer is not valid JSON ({exc})") from None


def retry_after(headers: httpx.Headers) -> float | None:
    """Return the seconds a ``Retry-After`` header asks to wait, or None (absent, unreadable).

    Both forms of RFC 9110: delay-seconds (fractions tolerated) and an HTTP date (the
    seconds from now to it by the local clock; 0 for a date in the past).
    """
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None  # RFC 9110 dates are GMT; a zoneless one is not an HTTP date
        seconds = max(0.0, when.timestamp() - time.time())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _api_detail(body: bytes) -> str:
    """The server's explanation: FastAPI ``detail`` (string or list), else the body text."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return _short_text(body)
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, str):
        return detail[:500]
    if isinstance(detail, list):
        messages = [str(item.get("msg", item)) for item in detail if isinstance(item, dict)]
        return "; ".join(messages)[:500]
    return _short_text(body)


def _short_text(body: bytes) -> str:
    return " ".join(body[:500].decode("utf-8", "replace").split())


def api_error(reply: Reply) -> StatusError:
    """Return the exception for an unexpected API status in *reply*."""
    detail = _api_detail(reply.body)
    message = f"{reply.what} failed with status {reply.status}" + (f": {detail}" if detail else "")
    url = reply.what.split(" ", 1)[-1]
    if reply.status == 429:
        return rate_limited(message, url, detail, retry_after(reply.headers))
    kind: type[StatusError] = StatusError
    if reply.status in (401, 403):
        kind = AuthError
    elif reply.status == 404:
        kind = NotFound
    elif reply.status >= 500:
        kind = ServerError
    return kind(message, status=reply.status, url=url, detail=detail)


def rate_limited(message: str, url: str, detail: str, advised: float | None) -> RateLimited:
    """Return the RateLimited error of a 429 that retries did not cure; *advised* is its
    ``Retry-After`` in seconds, if any."""
    if advised is not None:
        message += f" (the server asks to wait {round(advised, 1):g} s)"
    return RateLimited(message, url=url, detail=detail, retry_after=advised)


def s3_error(body: bytes) -> tuple[str, str]:
    """Return the ``(Code, Message)`` of an S3 XML error body (empty strings if absent)."""
    text = body[:MAX_ERROR_BODY].decode("utf-8", "replace")
    found = dict(_XML_TAG.findall(text))
    return found.get("Code", ""), found.get("Message", "")


def storage_error(
    status: int, body: bytes, what: str, *, upload: bool, headers: httpx.Headers | None = None
) -> StatusError:
    """Return the exception for an unexpected storage status (*headers*: the answer's).

    429 is :class:`RateLimited` (never final); 403, and 400 with an expiry or signature error
    code, mean the presigned URL is refused (:class:`UrlExpired`); other 4xx answers to an
    upload are :class:`UploadRejected`.
    """
    code, message = s3_error(body)
    if code or message:
        detail = f"{code}: {message}" if code and message else code or message
    else:
        detail = _api_detail(body)
    text = f"{what} failed with status {status}" + (f": {detail}" if detail else "")
    url = what.split(" ", 1)[-1]
    expired = code in _URL_REFUSED_CODES or "expired" in detail.lower()
    if status == 429:
        return rate_limited(text, url, detail, None if headers is None else retry_after(headers))
    kind: type[StatusError] = StatusError
    if status == 403 or (status == 400 and expired):
        kind = UrlExpired
    elif upload and 400 <= status < 500:
        kind = UploadRejected
    elif status == 404:
        kind = NotFound
    elif status >= 500:
        kind = ServerError
    return kind(text, status=status, url=url, detail=detail)


async def file_chunks(
    path: Path, size: int, counters: Counters, label: str = ""
) -> AsyncGenerator[bytes, None]:
    """Yield exactly *size* bytes of *path*, each chunk read in a worker thread while the
    one before is sent (``inthread.InThread``), through :class:`ChunkFile` (direct reads, or
    each chunk dropped from the page cache once read).

    An upload that takes longer than PROGRESS_INTERVAL logs its progress at INFO every
    PROGRESS_INTERVAL seconds, naming it *label* (default: the file's name).
    Raises IntegrityError if the file is shorter than *size* (it changed after it was
    registered).
    """
    started = trio.current_time()
    next_report = started + PROGRESS_INTERVAL
    source = await trio.to_thread.run_sync(ChunkFile.open, path)
    ahead: InThread[bytes] | None = None
    try:
        ahead = (
            InThread(functools.partial(source.read, 0, min(UPLOAD_CHUNK, size))) if size else None
        )
        done = 0
        while ahead is not None:
            chunk = await ahead.result()
            ahead = None
            if not chunk:
                raise IntegrityError(f"{path} shrank to {done} bytes during upload")
            done += len(chunk)
            if done < size:
                ahead = InThread(
                    functools.partial(source.read, done, min(UPLOAD_CHUNK, size - done))
                )
            counters.bytes_uploaded += len(chunk)
            if (now := trio.current_time()) >= next_report:
                next_report = now + PROGRESS_INTERVAL
                log.info(
                    "uploading %s: %.1f of %.1f MiB (%d%%), %.1f MiB/s",
                    label or path.name,
                    done / MIB,
                    size / MIB,
                    100 * done // size,
                    done / MIB / max(now - started, 1e-9),
                )
            yield chunk
    finally:
        with trio.CancelScope(shield=True):
            if ahead is not None:
                await ahead.finished()  # its thread must never read a descriptor reused
            await trio.to_thread.run_sync(source.close)


class ChunkFile:
    """A file being uploaded, read in chunks of at most UPLOAD_CHUNK bytes, each at an
    offset that is a multiple of UPLOAD_CHUNK (one read at a time).

    Direct (``O_DIRECT``, into one page-aligned buffer, copied out) where the filesystem
    allows it: the spool writes its files direct (``write/direct.py``), so their pages are
    not cached, and a read through the page cache would fill new pages only to drop them
    (docs/performance.md, "upload (session 7)"). Otherwise, or once a direct read is refused
    (EINVAL), through the page cache, each chunk dropped once read (:func:`read_dropping`):
    the file is read once, start to end, and a 1 GiB upload would otherwise leave 1 GiB of
    cache behind that nobody reads.
    """

    def __init__(self, fd: int, buffer: mmap.mmap | None) -> None:
        self._fd = fd
        self._buffer = buffer

    @classmethod
    def open(cls, path: Path) -> ChunkFile:
        """Open *path* (worker thread): direct if its filesystem allows it."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC), None)
        return cls(fd, mmap.mmap(-1, UPLOAD_CHUNK))

    def read(self, offset: int, size: int) -> bytes:
        """Read up to *size* bytes at *offset* (worker thread; fewer only at the end)."""
        if self._buffer is None:
            return read_dropping(self._fd, offset, size)
        try:
            got = os.preadv(self._fd, [self._buffer], offset)  # a whole buffer: aligned
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            self._buffer = None  # unmapped once unreferenced
            return read_dropping(self._fd, offset, size)
        return self._buffer[: min(got, size)]

    def close(self) -> None:
        """Close the file (worker thread); the buffer is unmapped once unreferenced."""
        os.close(self._fd)
        self._buffer = None


def read_dropping(fd: int, offset: int, size: int) -> bytes:
    """Read up to *size* bytes at *offset* of *fd*, then drop them from the page cache
    (advice only: a failure to drop is ignored)."""
    chunk = os.pread(fd, size, offset)
    with suppress(OSError):
        os.posix_fadvise(fd, offset, len(chunk), os.POSIX_FADV_DONTNEED)
    return chunk


@dataclass(frozen=True)
class MultipartFile:
    """A ``multipart/form-data`` body: form *fields* in order, then the file part ``file``.

    Built by hand so the file is streamed from disk through a worker thread (httpx's own
    multipart encoder reads files synchronously on the event loop).
    """

    fields: Sequence[tuple[str, str]]
    filename: str
    path: Path
    size: int
    boundary: str = ""

    def __post_init__(self) -> None:
        if not self.boundary:
            object.__setattr__(self, "boundary", uuid.uuid4().hex)

    @property
    def content_type(self) -> str:
        """The request's Content-Type header."""
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self) -> bytes:
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"'
            f"\r\n\r\n{value}\r\n"
            for name, value in self.fields
        ]
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quote(self.filename)}"\r\n\r\n'
        )
        return "".join(parts).encode()

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def length(self) -> int:
        """The exact body length (sent as Content-Length; S3 rejects chunked uploads)."""
        return len(self._head()) + self.size + len(self._tail())

    async def chunks(self, counters: Counters) -> AsyncGenerator[bytes, None]:
        """Yield the body; call again for a fresh copy (retries)."""
        yield self._head()
        chunks = file_chunks(self.path, self.size, counters, self.filename)
        async with aclosing(chunks) as content:
            async for chunk in content:
                yield chunk
        yield self._tail()


def _quote(value: str) -> str:
    """Escape a multipart header parameter the way browsers (and httpx) do."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")

"""SimvueClient: the typed async Simvue API every layer above uses.

Invariants:

- Every public coroutine finishes within ``settings.request_timeout`` (uploads: a deadline
  scaled by size) or raises :class:`~simvuefs.errors.DeadlineExceeded`; a caller's tighter
  cancel scope applies as well.
- Only :mod:`simvuefs.errors` exceptions (and ``OSError`` from local files being uploaded)
  leave this module: never an httpx exception, ``KeyError``, ``JSONDecodeError`` or
  ``trio.TooSlowError``.
- The token goes to API URLs (under ``settings.url``) only, never to storage URLs.
- Download URLs refreshed after :class:`~simvuefs.errors.UrlExpired` are remembered per
  artifact id in a small LRU map.
- A 401 from the API makes the client look for a new token (``settings.token_reload``, at
  most once per :data:`TOKEN_RELOAD_INTERVAL`) and repeat the request once with it; when
  there is none, the refusal is logged as an error (at most once per
  :data:`TOKEN_WARNING_INTERVAL`) and raised as AuthError (EACCES).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import cachetools
import httpx
import trio

from simvuefs.backends.jsonarray import ArrayReader
from simvuefs.backends.protocol import fill_by_receive
from simvuefs.backends.runs_pages import RunsPage, RunsPageMemo
from simvuefs.backends.storagepool import BODY_EXTENSION, StorageBody
from simvuefs.backends.transport import (
    MAX_ERROR_BODY,
    BodySink,
    Counters,
    MultipartFile,
    Reply,
    RetryPolicy,
    api_error,
    deadline,
    describe,
    display_url,
    fetch,
    file_chunks,
    open_http,
    parse_json,
    read_capped,
    resolve_url,
    send,
    storage_error,
    transport_error,
)
from simvuefs.config import MIB, Settings
from simvuefs.errors import (
    AuthError,
    DeadlineExceeded,
    ProtocolError,
    SimvueError,
    StatusError,
    TransportError,
    UrlExpired,
)
from simvuefs.localio import RateLimitedWarner
from simvuefs.models import CATEGORIES, Artifact, Run, UploadSlot

log = logging.getLogger(__name__)

# The official client's page size for GET /api/runs (protocol 3.4); servers cap it at 100.
PAGE_SIZE = 100
# The fields GET /api/runs is asked for, as the official Client.get_runs asks (booleans as
# requests spells them): the basic ones (name, folder, status, tags, times; a server may leave
# them out unless asked) and metadata (shown in .simvue-run.json), nothing heavier.
RUN_FIELDS = {
    "return_basic": "True",
    "return_metadata": "True",
    "return_system": "False",
    "return_timing": "False",
    "return_metrics": "False",
    "return_alerts": "False",
}
# Oldest first, in the client's sorting syntax: runs created while the pages are fetched
# join the end instead of pushing runs already fetched onto the next page.
RUN_SORTING = json.dumps([{"id": "created", "desc": False}])
# Runs pages asked for at once once the first page gave the total: 1,000 runs cost two round
# trips instead of ten.
RUN_PAGES_IN_FLIGHT = 16
# Largest piece taken at a time when a body is counted to learn a content size.
COUNT_CHUNK = 1 * MIB
# Fresh download URLs remembered after a refresh.
URL_MEMORY = 4096
# Uploads get 10 s plus one second per MiB, like the official client (protocol section 2),
# i.e. they may not be slower than this on average.
UPLOAD_BASE_SECONDS = 10.0
UPLOAD_MIN_BYTES_PER_SECOND = 1 * MIB
# The oldest server API simvuefs speaks (protocol 1.4: 1.1.0 <= version < 2.0.0).
SUPPORTED_MAJOR = 1
# A refused token is looked up again at most this often (seconds): a burst of 401s from
# concurrent requests costs one config file read.
TOKEN_RELOAD_INTERVAL = 1.0
# How often a persistently refused token is logged as an error (seconds).
TOKEN_WARNING_INTERVAL = 60.0
# Download URLs kept resolved and parsed (about 0.9 KiB each): enough for every file being
# read at once, whose read-ahead parts all GET the same URL.
RESOLVED_URLS = 256

T = TypeVar("T")


@dataclass(frozen=True)
class ClientStats:
    """Counters since the client was opened."""

    requests: int
    retries: int
    bytes_downloaded: int
    bytes_uploaded: int
    url_refreshes: int
    connections_opened: int


def _json_as(body: bytes, what: str, kind: type[T]) -> T:
    """The JSON *body* of the answer to *what*, checked to be a *kind* (ProtocolError if not)."""
    data = parse_json(body, what)
    if not isinstance(data, kind):
        raise ProtocolError(f"{what}: expected a JSON {kind.__name__}, got {type(data).__name__}")
    return data


class RangeStream:
    """The body of one download, limited to the requested byte range.

    ``total_size`` is the artifact's full content length when the server said it
    (Content-Range total on 206/416, Content-Length on 200), else None.
    ``status`` is the storage answer: 206 (Range honoured), 200 (Range ignored: the first
    ``start`` bytes are discarded here and the stream stops at ``end``), or 416 (the range
    starts at or past the end: the stream is empty).
    """

    def __init__(
        self,
        response: httpx.Response,
        *,
        skip: int,
        remaining: int | None,
        total_size: int | None,
        read_timeout: float,
        counters: Counters,
    ) -> None:
        self.status = response.status_code
        self.total_size = total_size
        self._response = response
        self.what = describe(response.request)
        self._skip = skip
        self._remaining = remaining
        self._read_timeout = read_timeout
        self._counters = counters
        self._pending = memoryview(b"")
        self._chunks: AsyncGenerator[bytes, None] | None = None
        encoded = response.headers.get("Content-Encoding", "identity") != "identity"
        storage_body = response.extensions.get(BODY_EXTENSION)
        plain = isinstance(storage_body, StorageBody) and not encoded
        self._storage_body: StorageBody | None = storage_body if plain else None
        if response.status_code != 416 and remaining != 0 and self._storage_body is None:
            chunks = response.aiter_bytes() if encoded else response.aiter_raw()
            self._chunks = cast(AsyncGenerator[bytes, None], chunks)

    async def receive(self, max_bytes: int) -> bytes:
        """Return the next 1..*max_bytes* bytes of the range, or ``b""`` at its end.

        Raises DeadlineExceeded when the server sends nothing for ``read_timeout`` seconds,
        TransportError when the connection breaks.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        while not self._pending:
            if self._remaining == 0 or (self._chunks is None and self._storage_body is None):
                return b""
            chunk = await self._next_chunk(max_bytes + self._skip)
            if chunk is None:
                self._remaining = 0
                return b""
            if self._skip:
                dropped = min(self._skip, len(chunk))
                self._skip -= dropped
                chunk = chunk[dropped:]
            self._pending = memoryview(chunk)
        take = min(max_bytes, len(self._pending))
        if self._remaining is not None:
            take = min(take, self._remaining)
            self._remaining -= take
        if take == len(self._pending) and isinstance(self._pending.obj, bytes):
            out = self._pending.obj if len(self._pending.obj) == take else bytes(self._pending)
        else:
            out = bytes(self._pending[:take])
        self._pending = self._pending[take:]
        return out

    async def readinto(self, view: memoryview) -> int:
        """Fill *view* with the next bytes of the range; return how many, fewer than
        ``len(view)`` only at its end. A storage range GET's body is read straight from the
        socket into *view* (backends/storagepool.py); any other body through
        :meth:`receive`.

        Raises as :meth:`receive`.
        """
        body = self._storage_body
        if body is None or self._skip or self._pending:
            return await fill_by_receive(self.receive, view)
        wanted = len(view) if self._remaining is None else min(len(view), self._remaining)
        if not wanted:
            return 0
        try:
            got = await body.readinto(view[:wanted])
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.what) from None
        self._counters.bytes_downloaded += got
        if self._remaining is not None:
            self._remaining = self._remaining - got if got == wanted else 0
        return got

    async def _next_chunk(self, max_bytes: int) -> bytes | None:
        """The next piece of the body (a storage range GET's: at most *max_bytes*, straight
        from the socket, see backends/storagepool.py), None at its end."""
        if self._remaining is not None:
            max_bytes = min(max_bytes, self._remaining + self._skip)
        try:
            with trio.fail_after(self._read_timeout):
                if self._storage_body is not None:
                    chunk = await self._storage_body.receive(max_bytes)
                    if not chunk:
                        return None
                else:
                    assert self._chunks is not None
                    chunk = await anext(self._chunks)
        except StopAsyncIteration:
            return None
        except trio.TooSlowError:
            raise DeadlineExceeded(f"{self.what}: no data for {self._read_timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.what) from None
        self._counters.bytes_downloaded += len(chunk)
        return chunk

    async def aclose(self) -> None:
        """Release the connection (dropped if the body was not read to the end)."""
        with trio.move_on_after(1.0, shield=True):
            if self._chunks is not None:
                await self._chunks.aclose()
            await self._response.aclose()


class SimvueClient:
    """The Simvue REST API (protocol sections 1.4, 3, 4) over one ``httpx.AsyncClient``."""

    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, counters: Counters | None = None
    ) -> None:
        self._settings = settings
        self._http = http
        self._api_base = settings.url.rstrip("/")
        self._token = settings.token
        self._token_checked = -math.inf  # trio time of the last token reload
        self._token_warned = -math.inf
        self._token_lock = trio.Lock()
        self._policy = RetryPolicy(attempts=max(1, settings.retry_attempts))
        self._counters = counters or Counters()
        self._fresh_urls: cachetools.LRUCache[str, str] = cachetools.LRUCache(URL_MEMORY)
        # Download URLs as the server sent them -> resolved and parsed, once per URL: every
        # read-ahead part of a file is a GET of the same URL (docs/performance.md, session 9).
        self._resolved: cachetools.LRUCache[str, httpx.URL] = cachetools.LRUCache(RESOLVED_URLS)
        self._skips = RateLimitedWarner(log)
        # Ids of artifacts left out of listings as not uploaded yet (logged once each).
        self._not_uploaded: cachetools.LRUCache[str, bool] = cachetools.LRUCache(URL_MEMORY)
        self._decoded_runs_pages = RunsPageMemo()  # each runs page decoded once while unchanged

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> AsyncIterator[SimvueClient]:
        """Yield a client for *settings*; *transport* replaces the network in tests."""
        counters = Counters()
        async with open_http(settings, transport, counters) as http:
            yield cls(settings, http, counters)

    def statistics(self) -> ClientStats:
        """Return a snapshot of the request counters."""
        return ClientStats(**dataclasses.asdict(self._counters))

    def counters(self) -> tuple[str, dict[str, Any]]:
        """Return ``"client"`` and the request counters, for ``simvuefs status``."""
        return "client", dataclasses.asdict(self.statistics())

    # -- API plumbing -------------------------------------------------------------------

    def _api_url(self, *segments: str) -> str:
        return self._api_base + "".join("/" + quote(part, safe="") for part in segments)

    async def _api(
        self,
        method: str,
        segments: Sequence[str],
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        expect: Sequence[int] = (200,),
        sink: Callable[[str], BodySink] | None = None,
    ) -> Reply:
        """Make one API request (with retries); StatusError subclasses on other statuses.

        With *sink*, a 200 answer's body goes to it as it arrives (``transport.fetch``)."""
        # Parsed once here, with its query: httpx parses a URL string (and a URL given
        # *params*) again in every build_request, a sixth of a listing's CPU in the daemon.
        url = httpx.URL(self._api_url(*segments), params=params or None)
        sent_with = self._token

        def build() -> httpx.Request:
            nonlocal sent_with
            sent_with = self._token
            headers = {"Authorization": f"Bearer {sent_with}", "Accept": "application/json"}
            return self._http.build_request(method, url, json=body, headers=headers)

        reply = await fetch(self._http, build, self._policy, self._counters, sink=sink)
        if reply.status == 401 and await self._new_token(sent_with, reply):
            reply = await fetch(self._http, build, self._policy, self._counters, sink=sink)
        if reply.status not in expect:
            raise api_error(reply)
        return reply

    async def _new_token(self, refused: str, reply: Reply) -> bool:
        """After a 401 to a request sent with the token *refused*: return True if there is
        another token to try (found now, or by a concurrent request since); log otherwise.

        Never logs a token. One reload at a time: concurrent refusals wait for its result.
        """
        async with self._token_lock:
            if self._token != refused:
                return True
            reload = self._settings.token_reload
            now = trio.current_time()
            if reload is not None and now - self._token_checked >= TOKEN_RELOAD_INTERVAL:
                self._token_checked = now
                try:
                    token = await trio.to_thread.run_sync(reload)
                except SimvueError as exc:
                    log.debug("looking for a new token: %s", exc)
                else:
                    if token != self._token:
                        self._token = token
                        log.info("the server refused the token; retrying with a new one")
                        return True
        if now - self._token_warned >= TOKEN_WARNING_INTERVAL:
            self._token_warned = now
            detail = api_error(reply).detail.replace(refused, "<token>") if refused else ""
            log.error(
                "the Simvue server refuses the token (%s); requests fail with EACCES until a "
                "valid token is configured%s",
                detail or f"HTTP {reply.status}",
                " (simvuefs looks for it again where it found it: environment, config file)"
                if reload is not None
                else "",
            )
        return False

    async def _api_json(
        self, method: str, segments: Sequence[str], kind: type[T], **kwargs: Any
    ) -> tuple[T, str]:
        """Make an API request and return its JSON body, checked to be a *kind*."""
        reply = await self._api(method, segments, **kwargs)
        return _json_as(reply.body, reply.what, kind), reply.what

    def _deadline(self, method: str, *segments: str) -> AbstractContextManager[None]:
        return deadline(self._settings.request_timeout, f"{method} {self._api_url(*segments)}")

    def _download_deadline(self, artifact: Artifact) -> AbstractContextManager[None]:
        return deadline(self._settings.request_timeout, f"download of artifact {artifact.id}")

    def _parse_entries(
        self, entries: Iterable[Any], parse: Callable[[Any], T], what: str
    ) -> list[T]:
        parsed: list[T] = []
        for entry in entries:
            try:
                parsed.append(parse(entry))
            except ProtocolError as exc:
                self._skips.warn("%s: skipped a malformed entry (%s)", what, exc)
        return parsed

    def _uploaded(self, artifacts: list[Artifact], run_id: str) -> list[Artifact]:
        """*artifacts* without those whose content is not uploaded yet (logged once each)."""
        for artifact in artifacts:
            if not artifact.uploaded and artifact.id not in self._not_uploaded:
                self._not_uploaded[artifact.id] = True
                log.info(
                    "run %s: artifact %s (%r) is not uploaded yet; not shown until it is",
                    run_id,
                    artifact.id,
                    artifact.name,
                )
        return [artifact for artifact in artifacts if artifact.uploaded]

    # -- server ---------------------------------------------------------------------------

    async def server_version(self) -> str:
        """Return the server's version (``GET /api/version``); check the token and the API.

        Raises AuthError "the server rejected the token" on 401/403, ProtocolError when the
        server is not a Simvue 1.x server.
        """
        with self._deadline("GET", "version"):
            try:
                data, what = await self._api_json("GET", ["version"], dict)
            except AuthError as exc:
                raise AuthError(
                    f"the server rejected the token ({exc})",
                    status=exc.status,
                    url=exc.url,
                    detail=exc.detail,
                ) from None
        version = data.get("version")
        if not isinstance(version, str) or not version:
            raise ProtocolError(f"{what}: no version in the answer; is this a Simvue server?")
        major = version.lstrip("v").split(".", 1)[0]
        if major != str(SUPPORTED_MAJOR):
            raise ProtocolError(
                f"{what}: server version {version!r} is not supported "
                f"(simvuefs speaks the Simvue {SUPPORTED_MAJOR}.x API)"
            )
        return version

    # -- runs -----------------------------------------------------------------------------

    async def list_runs(self, filters: Sequence[str] = ()) -> list[Run]:
        """Return every run matching all *filters* (protocol 3.4 grammar), all pages.

        Asks for :data:`RUN_FIELDS`, sorted by :data:`RUN_SORTING` (oldest first, so runs
        created meanwhile come last and push none out). Pages are ``count=100&start=N``, N
        advancing by what each page held (a server may cap pages below 100). Once a page's
        ``count`` (total matches) says how many more there are, up to
        :data:`RUN_PAGES_IN_FLIGHT` of them are asked for at once, each ``start`` a multiple
        of the first page's length, and taken in order; a page shorter than that (a server
        that caps some pages lower) drops the pages fetched after it, which start too far,
        and paging goes on from its end. Iteration stops at an empty page, when ``count`` is reached
        (the last page's, which counts runs created meanwhile), or when a page brings no new
        run ids (a server that ignores ``start``). A run listed twice (pages shifted
        meanwhile) is returned once. Malformed entries are skipped with a warning.
        """
        runs: dict[str, Run] = {}
        seen: set[str] = set()
        following = 0  # where the next page starts
        step = 0  # the length of the first page: what the server gives
        starts = [following]
        with self._deadline("GET", "runs"):
            while True:
                pages = await self._runs_pages(filters, starts)
                for start, page in zip(starts, pages, strict=True):
                    if start != following:
                        break  # a shorter page came before: this one skipped runs
                    for run in page.runs:
                        runs.setdefault(run.id, run)
                    stale = page.ids <= seen  # a server ignoring `start` repeats its first page
                    seen |= page.ids
                    following = start + page.length
                    length, total = page.length, page.total
                    if not length or stale or not _more_pages(total, following, length):
                        return list(runs.values())
                    known_total, step = total, step or length
                starts = _next_starts(known_total, following, step)

    async def _runs_pages(self, filters: Sequence[str], starts: Sequence[int]) -> list[RunsPage]:
        """Fetch the runs pages at *starts* concurrently, in the order of *starts*, each
        decoded once while its answer does not change (``runs_pages.py``). The first failure
        cancels the others and is raised."""
        pages: dict[int, RunsPage] = {}
        failures: list[SimvueError] = []

        async def fetch_or_stop(start: int, stop: trio.CancelScope) -> None:
            try:
                await fetch_page(start)
            except SimvueError as exc:
                failures.append(exc)
                stop.cancel()

        async def fetch_page(start: int) -> None:
            params = {
                **RUN_FIELDS,
                "sorting": RUN_SORTING,
                "count": str(PAGE_SIZE),
                "start": str(start),
            }
            if filters:
                params["filters"] = json.dumps(list(filters))
            reply = await self._api("GET", ["runs"], params=params)
            request = tuple(sorted(params.items()))
            pages[start] = self._decoded_runs_pages.decoded(
                request, reply.body, lambda: self._runs_page(reply.body, reply.what)
            )

        if len(starts) == 1:
            await fetch_page(starts[0])
        else:
            async with trio.open_nursery() as nursery:
                for start in starts:
                    nursery.start_soon(fetch_or_stop, start, nursery.cancel_scope)
            if failures:
                raise failures[0]
        return [pages[start] for start in starts]

    def _runs_page(self, body: bytes, what: str) -> RunsPage:
        """Decode one answer of ``GET /api/runs``."""
        data = _json_as(body, what, dict)
        page = data.get("data")
        if not isinstance(page, list):
            raise ProtocolError(f"{what}: no 'data' list in the answer")
        ids = {e["id"] for e in page if isinstance(e, dict) and isinstance(e.get("id"), str)}
        runs = tuple(self._parse_entries(page, Run.from_json, what))
        return RunsPage(runs, frozenset(ids), len(page), data.get("count"), what)

    async def whoami(self) -> str | None:
        """Return the user the server knows the token by: ``user`` of ``GET /api/whoami``
        (as simvue-cli's ``whoami`` and the client's ``Stats.whoami`` read it).

        None, with a warning, when the server answers anything but a user (no such
        endpoint, a refusal other than 401, an unusable answer): runs of other users then
        cannot be told from the user's own, and the server decides what they may change.
        """
        with self._deadline("GET", "whoami"):
            try:
                data, what = await self._api_json("GET", ["whoami"], dict)
            except (StatusError, ProtocolError) as exc:
                if isinstance(exc, StatusError) and exc.status == 401:
                    raise
                data, what = {}, str(exc)
        user = data.get("user")
        if isinstance(user, str) and user:
            return user
        log.warning("%s: no user named; runs shared with you are not told from your own", what)
        return None

    async def get_run(self, run_id: str) -> Run:
        """Return one run (``GET /api/runs/{id}``); NotFound if it does not exist."""
        with self._deadline("GET", "runs", run_id):
            data, _ = await self._api_json("GET", ["runs", run_id], dict)
        return Run.from_json(data, run_id=run_id)

    # -- artifacts ------------------------------------------------------------------------

    async def list_artifacts(
        self,
        run_id: str,
        category: str | None = None,
        name: str | None = None,
        known: Mapping[str, Artifact] | None = None,
    ) -> list[Artifact]:
        """Return the artifacts of a run, optionally only one *category* or exact *name*.

        NotFound when the run does not exist. Entries without ``category`` get the requested
        one. Malformed entries are skipped with a warning. Artifacts whose content is not
        uploaded yet (``uploaded: false``: another client between registering and uploading)
        are left out, with a log line once per artifact: they are listed once a later
        listing shows them uploaded, so every listed artifact can be read. An entry that
        differs from the record of *known* with its id only in its ``url`` is returned as
        that record, as it is decoded (no second copy of an unchanged artifact).
        """
        params = {key: value for key, value in (("category", category), ("name", name)) if value}
        in_category = category if category in CATEGORIES else None
        records = known or {}
        artifacts: list[Artifact] = []

        def reader(what: str) -> ArrayReader:
            artifacts.clear()  # a body read again after a broken connection starts over

            def take(entry: object) -> None:
                try:
                    artifact = Artifact.from_json(entry)
                except ProtocolError as exc:
                    self._skips.warn("%s: skipped a malformed entry (%s)", what, exc)
                    return
                if in_category is not None and not artifact.category:
                    artifact = artifact.replace(category=in_category)
                old = records.get(artifact.id)
                artifacts.append(
                    old if old is not None and old.same_but_url(artifact) else artifact
                )

            return ArrayReader(what, take)

        # Decoded as it arrives: no copy of the body, its text or its dictionaries outlives
        # the chunk it came in (issue 17).
        with self._deadline("GET", "runs", run_id, "artifacts"):
            await self._api("GET", ["runs", run_id, "artifacts"], params=params, sink=reader)
        return self._uploaded(artifacts, run_id)

    async def get_artifact(self, artifact_id: str) -> Artifact:
        """Return one artifact (``GET /api/artifacts/{id}``); NotFound if it does not exist."""
        with self._deadline("GET", "artifacts", artifact_id):
            data, _ = await self._api_json("GET", ["artifacts", artifact_id], dict)
        return Artifact.from_json(data)

    # -- downloads ------------------------------------------------------------------------

    @asynccontextmanager
    async def open_range(
        self, artifact: Artifact, start: int, end: int | None = None
    ) -> AsyncIterator[RangeStream]:
        """Open a download of bytes *start*..*end* (inclusive; None = to the end).

        Sends ``Range: bytes=start-end`` and ``Accept-Encoding: identity`` without any
        Authorization. Opening is bounded by ``request_timeout``; each ``receive`` by
        ``read_timeout``. A refused URL (UrlExpired) is refreshed with
        ``GET /api/artifacts/{id}`` once and remembered.
        """
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}-{end}")
        with self._download_deadline(artifact):
            response = await self._open_download(artifact, start, end)
        try:
            stream = self._range_stream(response, start, end)
        except ProtocolError:
            await response.aclose()
            raise
        try:
            yield stream
        finally:
            await stream.aclose()

    async def read_range(
        self,
        artifact: Artifact,
        start: int,
        length: int,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Return *length* bytes from *start* (fewer only at the end of the content).

        A connection that breaks mid-body is resumed from the first missing byte; it gives up
        after ``retry_attempts`` breaks in a row that brought no bytes (or at the deadline).
        *on_chunk*, if given, is called with every piece as it arrives, in order (their
        concatenation is the result), so a caller can use the first bytes early.
        """
        parts: list[bytes] = []
        got = 0
        barren = 0
        with self._download_deadline(artifact):
            while got < length:
                before = got
                opened = False
                try:
                    async with self.open_range(artifact, start + got, start + length - 1) as body:
                        opened = True
                        while got < length:
                            chunk = await body.receive(length - got)
                            if not chunk:
                                return b"".join(parts)
                            parts.append(chunk)
                            got += len(chunk)
                            if on_chunk is not None:
                                on_chunk(chunk)
                except DeadlineExceeded:
                    raise
                except TransportError as exc:
                    barren = 0 if got > before else barren + 1
                    if not opened or barren >= self._policy.attempts:
                        raise
                    log.debug("artifact %s: %s; resuming at byte %d", artifact.id, exc, start + got)
                    self._counters.retries += 1
        return b"".join(parts)

    async def content_length(self, artifact: Artifact) -> int:
        """Return the real content size (``Range: bytes=0-0``; the body is not read).

        Needed for object artifacts, whose server ``size`` is the content length + 33.
        Storage that says no size (Range ignored and no Content-Length: a chunked body, or
        ``bytes 0-0/*``) gets a second GET whose whole body is counted, within a deadline
        scaled by the artifact's size like an upload's.
        """
        async with self.open_range(artifact, 0, 0) as stream:
            if stream.total_size is not None:
                return stream.total_size
            log.debug("%s: no content size in the answer; counting the body", stream.what)
        seconds = max(
            self._settings.request_timeout,
            UPLOAD_BASE_SECONDS + artifact.size / UPLOAD_MIN_BYTES_PER_SECOND,
        )
        size = 0
        with deadline(seconds, f"download of artifact {artifact.id} to learn its size"):
            async with self.open_range(artifact, 0) as stream:
                while chunk := await stream.receive(COUNT_CHUNK):
                    size += len(chunk)
        return size

    async def _download_url(self, artifact: Artifact, *, refresh: bool) -> httpx.URL:
        url = None if refresh else self._fresh_urls.get(artifact.id, artifact.url)
        if url is None:
            self._counters.url_refreshes += 1
            data, what = await self._api_json("GET", ["artifacts", artifact.id], dict)
            url = data.get("url")
            if not isinstance(url, str) or not url:
                raise ProtocolError(f"{what}: the artifact has no download URL")
            self._fresh_urls[artifact.id] = url
        resolved = self._resolved.get(url)
        if resolved is None:
            resolved = self._resolved[url] = resolve_url(self._api_base, url)
        return resolved

    async def _open_download(
        self, artifact: Artifact, start: int, end: int | None
    ) -> httpx.Response:
        headers = {
            "Range": f"bytes={start}-{'' if end is None else end}",
            "Accept-Encoding": "identity",
        }
        refreshed = False
        url = await self._download_url(artifact, refresh=False)
        while True:
            response = await send(
                self._http,
                functools.partial(self._http.build_request, "GET", url, headers=headers),
                self._policy,
                self._counters,
                follow_redirects=True,
            )
            if response.status_code in (200, 206, 416):
                return response
            what = describe(response.request)
            try:
                body = await read_capped(response, MAX_ERROR_BODY, what)
            finally:
                await response.aclose()
            error = storage_error(
                response.status_code, body, what, upload=False, headers=response.headers
            )
            if not isinstance(error, UrlExpired) or refreshed:
                raise error
            log.debug("%s: URL refused (%s); refreshing it", what, error.detail)
            refreshed = True
            url = await self._download_url(artifact, refresh=True)

    def _range_stream(self, response: httpx.Response, start: int, end: int | None) -> RangeStream:
        """Wrap a 200/206/416 storage answer for the range *start*..*end*."""
        what = describe(response.request)
        skip: int = 0
        remaining: int | None = 0
        total: int | None
        if response.status_code == 206:
            if response.headers.get("Content-Encoding", "identity") != "identity":
                raise ProtocolError(f"{what}: a partial answer must not be content-encoded")
            first, last, total = _content_range(response.headers.get("Content-Range", ""), what)
            if first != start or last is None or (end is not None and last > end):
                raise ProtocolError(f"{what}: asked for bytes {start}-{end}, got {first}-{last}")
            remaining = last - first + 1
        elif response.status_code == 416:
            _, _, total = _content_range(response.headers.get("Content-Range", ""), what)
            if total is None and start == 0:
                total = 0  # even byte 0 is unsatisfiable: the content is empty
        else:  # 200: the whole body; skip to *start* here
            total = _int_header(response.headers.get("Content-Length"))
            if "Content-Encoding" in response.headers:
                total = None  # the length of the encoded body
            skip = start
            remaining = None if end is None else end - start + 1
        return RangeStream(
            response,
            skip=skip,
            remaining=remaining,
            total_size=total,
            read_timeout=self._settings.read_timeout,
            counters=self._counters,
        )

    # -- uploads (protocol 4.2) -----------------------------------------------------------

    async def create_artifact(
        self,
        *,
        name: str,
        original_path: str,
        size: int,
        mime_type: str,
        checksum: str,
        metadata: dict[str, Any] | None = None,
    ) -> UploadSlot:
        """Register an artifact (``POST /api/artifacts``) and return where to upload it.

        409 counts as success. ``slot.url`` is None when the server already has the content.
        """
        body = {
            "name": name,
            "original_path": original_path,
            "size": size,
            "mime_type": mime_type,
            "checksum": checksum,
            "metadata": metadata,
        }
        with self._deadline("POST", "artifacts"):
            data, _ = await self._api_json(
                "POST", ["artifacts"], dict, body=body, expect=(200, 201, 409)
            )
        return UploadSlot.from_json(data)

    async def upload_content(self, slot: UploadSlot, path: Path, size: int, filename: str) -> None:
        """Send *size* bytes of the local file *path* to ``slot.url`` (nothing if None).

        With ``slot.fields``: multipart POST, the fields in order then the ``file`` part named
        *filename*; otherwise a raw PUT without Content-Type. The file is streamed from a
        worker thread and re-read on retries. Deadline: ``max(request_timeout, 10 s + 1 s per
        MiB)``. Success is 200/201/204.

        Raises UploadRejected (e.g. S3 BadDigest), UrlExpired, ServerError, TransportError,
        DeadlineExceeded, IntegrityError (the file shrank) or OSError (the file is unreadable).
        """
        if slot.url is None:
            return
        url = resolve_url(self._api_base, slot.url)
        chunks: Callable[[], AsyncGenerator[bytes, None]]
        if slot.fields:
            form = MultipartFile(slot.fields, filename, path, size)
            method = "POST"
            headers = {"Content-Type": form.content_type, "Content-Length": str(form.length)}
            chunks = functools.partial(form.chunks, self._counters)
        else:
            method = "PUT"
            headers = {"Content-Length": str(size)}  # and no Content-Type, like the client
            chunks = functools.partial(file_chunks, path, size, self._counters, filename)
        bodies: list[AsyncGenerator[bytes, None]] = []  # one per attempt, closed at the end

        def build() -> httpx.Request:
            bodies.append(chunks())
            return self._http.build_request(method, url, headers=headers, content=bodies[-1])

        seconds = max(
            self._settings.request_timeout,
            UPLOAD_BASE_SECONDS + size / UPLOAD_MIN_BYTES_PER_SECOND,
        )
        what = f"{method} {display_url(url)}"
        try:
            with deadline(seconds, what):
                response = await send(self._http, build, self._policy, self._counters)
                try:
                    body = await read_capped(response, MAX_ERROR_BODY, what)
                finally:
                    await response.aclose()
        finally:
            with trio.CancelScope(shield=True):
                for started in bodies:
                    await started.aclose()  # closes the file of an interrupted attempt
        if response.status_code not in (200, 201, 204):
            raise storage_error(
                response.status_code, body, what, upload=True, headers=response.headers
            )

    async def mark_uploaded(self, artifact_id: str) -> None:
        """Tell the server the content is in place (``PUT /api/artifacts/{id}``)."""
        with self._deadline("PUT", "artifacts", artifact_id):
            await self._api(
                "PUT", ["artifacts", artifact_id], body={"uploaded": True}, expect=(200, 409)
            )

    async def attach(self, run_id: str, artifact_id: str, category: str) -> None:
        """Attach an artifact to a run in *category* (``PUT /api/runs/{rid}/artifacts/{aid}``)."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown artifact category {category!r}")
        with self._deadline("PUT", "runs", run_id, "artifacts", artifact_id):
            await self._api(
                "PUT", ["runs", run_id, "artifacts", artifact_id], body={"category": category}
            )

    async def delete_artifact(self, artifact_id: str) -> None:
        """Delete an artifact (``DELETE /api/artifacts/{id}``, protocol 4.4's generic delete).

        The uploader uses it only for artifacts it created itself: the earlier name of a
        file renamed after it landed.
        """
        with self._deadline("DELETE", "artifacts", artifact_id):
            await self._api("DELETE", ["artifacts", artifact_id], expect=(200, 204))

    async def artifact_runs(self, artifact_id: str) -> list[str]:
        """Return the ids of the runs the artifact is attached to, as the official
        ``ArtifactBase.runs`` finds them: ``GET /api/runs`` filtered on ``artifact.id ==``
        (all the runs the token may list, the user's own and shared ones)."""
        return [run.id for run in await self.list_runs([f"artifact.id == {artifact_id}"])]


def _more_pages(total: object, next_start: int, page_length: int) -> bool:
    """Decide whether another runs page may exist, whatever ``count`` means.

    ``count`` should be the total number of matches; some servers may send the page size.
    Only a full page whose ``count`` equals its length is ambiguous: ask once more.
    """
    if not isinstance(total, int) or isinstance(total, bool):
        return True
    if next_start < total:
        return True
    return total == page_length == PAGE_SIZE


def _next_starts(total: object, following: int, page_length: int) -> list[int]:
    """The ``start`` of the runs pages to ask for at once, pages of *page_length* from
    *following*: every page up to the total *total* (at most :data:`RUN_PAGES_IN_FLIGHT`),
    or just the next one when *total* does not say how many there are."""
    if not isinstance(total, int) or isinstance(total, bool) or total <= following:
        return [following]
    return list(range(following, total, page_length)[:RUN_PAGES_IN_FLIGHT])


def _int_header(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _content_range(value: str, what: str) -> tuple[int | None, int | None, int | None]:
    """Parse ``bytes a-b/total`` or ``bytes */total``; ``*`` and absent parts are None."""
    unit, _, spec = value.strip().partition(" ")
    span, _, total_text = spec.partition("/")
    if unit.lower() != "bytes" or not span:
        if not value:
            return None, None, None
        raise ProtocolError(f"{what}: unreadable Content-Range {value!r}")
    total = _int_header(total_text)
    if span == "*":
        return None, None, total
    first_text, _, last_text = span.partition("-")
    first, last = _int_header(first_text), _int_header(last_text)
    if first is None or last is None or last < first:
        raise ProtocolError(f"{what}: unreadable Content-Range {value!r}")
    return first, last, total

"""Keep-alive HTTP/1.1 connections for GETs (storage range GETs, API listings), their bodies
read with one copy.

:class:`~simvuefs.backends.tls.Network` hands every ``GET`` without a body that goes to its
origin without a proxy to :meth:`StoragePool.handle`: storage range GETs and the API's
listings, each of which costs the daemon 10-20% less CPU here than through httpcore
(``find runs`` makes one per run; docs/performance.md). Everything else (other API calls,
uploads, proxied requests) keeps httpx's own transport. Redirects and retries stay above
(``redirects.FollowRedirects``, ``transport.send``): answers come back as ``httpx.Response``
objects and failures as httpx exceptions, with the ``ssl``/``trio`` error as their cause,
so that ``Network`` explains TLS failures and ``send`` retries exactly as for httpx's
transport.

h11 is the HTTP/1.1 parser under httpx (httpx -> httpcore -> h11), installed with it: no
dependency beyond the declared four.

Invariants:

- Every request gets a fresh ``h11.Connection``: h11 writes the request and parses the
  answer's head. The body bytes h11 received with the head are handed over first; the rest
  of a body framed by ``Content-Length`` is read straight from the socket (one copy, never
  past the body's end): as bytes (:meth:`StorageBody.receive`), or into the caller's buffer
  (:meth:`StorageBody.readinto`: on plain TCP with ``readv`` on the socket's descriptor,
  trio waiting only while the socket is empty). h11 never sees those bytes, which is why
  its connection object is thrown away with the answer, while the socket may live on.
- A socket goes back to the idle pool only when its answer was read to exactly its end
  (its ``Content-Length``, or a chunked body's last chunk as h11 parsed it), nothing was
  received beyond it, and both sides allow keep-alive (HTTP/1.1, no ``Connection:
  close``). A body not read to its end, a body ended by the connection's end, a failure,
  a cancellation: the socket is closed.
- A socket taken from the pool that fails before any byte of the answer arrived (the server
  closed it while it was idle) is replaced by a new connection once, transparently.
- Idle sockets: at most :data:`MAX_IDLE_PER_ORIGIN` per origin (scheme, host, port), none
  reused after :data:`IDLE_EXPIRY` seconds; the most recently used one is taken first.
- Deadlines come from the request's httpx ``timeout`` extension: ``connect`` for the TCP
  connection and TLS handshake, ``write`` for sending the request, ``read`` for each socket
  read (the head and every body read).
- *on_connect* is called once per connection opened (TCP connected).
"""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import h11
import httpx
import trio

from simvuefs.backends.protocol import fill_by_receive
from simvuefs.config import MIB

Origin = tuple[str, str, int]
MAX_IDLE_PER_ORIGIN = 64
"""Enough for 16 readers with several parts in flight each, plus random reads."""
IDLE_EXPIRY = 15.0
"""Seconds an idle socket may be reused (below S3's 20 s and nginx's 75 s idle timeouts)."""
HEAD_READ_BYTES = 64 * 1024
"""One socket read while the head is awaited: small, because the body bytes that come with
the head pass through h11's buffer (two copies); the rest of a body is read directly."""
BODY_READ_BYTES = 4 * MIB
"""One socket read of a body at most (a 1 MiB block usually arrives in one or two)."""
MAX_HEAD_BYTES = 100 * 1024
"""The longest answer head accepted (as httpcore)."""
_DEFAULT_PORTS = {"http": 80, "https": 443}


def pooled(request: httpx.Request) -> bool:
    """True for the requests this pool serves: a ``GET`` without a body."""
    return (
        request.method == "GET"
        and isinstance(request.stream, httpx.ByteStream)
        and request.url.scheme in _DEFAULT_PORTS
    )


class _Stale(Exception):
    """A pooled socket failed before any byte of the answer arrived."""


@dataclass
class _Idle:
    stream: trio.abc.Stream
    since: float


@dataclass(frozen=True)
class _Timeouts:
    connect: float
    read: float
    write: float

    @classmethod
    def of(cls, request: httpx.Request) -> _Timeouts:
        given = request.extensions.get("timeout", {})

        def seconds(name: str) -> float:
            value = given.get(name)
            return math.inf if value is None else float(value)

        return cls(seconds("connect"), seconds("read"), seconds("write"))


class StoragePool:
    """Idle keep-alive sockets per origin, and the exchanges that use them (module
    docstring)."""

    def __init__(self, on_connect: Callable[[], None]) -> None:
        self._idle: dict[Origin, list[_Idle]] = {}
        self._on_connect = on_connect
        self._closed = False

    async def handle(self, request: httpx.Request, context: ssl.SSLContext) -> httpx.Response:
        """Send *request* (:func:`pooled`) and return its answer with a streamed body;
        *context* verifies an ``https`` origin. Raises httpx exceptions only."""
        url = request.url
        origin: Origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        timeouts = _Timeouts.of(request)
        stream = await self._take_idle(origin)
        if stream is not None:
            try:
                return await self._exchange(stream, origin, request, timeouts, reused=True)
            except _Stale:
                pass  # closed by _exchange; a new connection follows
        stream = await self._connect(origin, context, timeouts)
        return await self._exchange(stream, origin, request, timeouts, reused=False)

    async def aclose(self) -> None:
        """Close every idle socket; sockets in use are closed when their answers are."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for entries in idle.values():
            for entry in entries:
                await trio.aclose_forcefully(entry.stream)

    async def _take_idle(self, origin: Origin) -> trio.abc.Stream | None:
        entries = self._idle.get(origin, [])
        oldest_usable = trio.current_time() - IDLE_EXPIRY
        while entries:
            entry = entries.pop()
            if entry.since >= oldest_usable:
                return entry.stream
            # Every entry before this one is older still.
            expired = [entry, *entries]
            entries.clear()
            for old in expired:
                await trio.aclose_forcefully(old.stream)
        return None

    async def release(self, origin: Origin, stream: trio.abc.Stream) -> None:
        """Keep *stream*, whose last answer was read to its end, for *origin*'s next request
        (or close it: the pool is closed, or the origin has enough idle sockets)."""
        if self._closed:
            await trio.aclose_forcefully(stream)
            return
        entries = self._idle.setdefault(origin, [])
        entries.append(_Idle(stream, trio.current_time()))
        if len(entries) > MAX_IDLE_PER_ORIGIN:
            await trio.aclose_forcefully(entries.pop(0).stream)

    async def _connect(
        self, origin: Origin, context: ssl.SSLContext, timeouts: _Timeouts
    ) -> trio.abc.Stream:
        scheme, host, port = origin
        try:
            with trio.fail_after(timeouts.connect):
                tcp = await trio.open_tcp_stream(host, port)
                self._on_connect()
                if scheme == "http":
                    return tcp
                tls = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
                shook = False
                try:
                    await tls.do_handshake()
                    shook = True
                finally:
                    if not shook:
                        await trio.aclose_forcefully(tls)
                return tls
        except trio.TooSlowError:
            raise httpx.ConnectTimeout(f"no connection within {timeouts.connect:g} s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise httpx.ConnectError(_reason(exc)) from exc

    async def _exchange(
        self,
        stream: trio.abc.Stream,
        origin: Origin,
        request: httpx.Request,
        timeouts: _Timeouts,
        *,
        reused: bool,
    ) -> httpx.Response:
        """Send *request* on *stream* and read the answer's head; the stream is closed
        unless the returned answer holds it."""
        exchange = _Exchange(stream, timeouts, reused)
        handed_over = False
        try:
            head = await exchange.head(request)
            body = StorageBody(self, origin, exchange, head)
            handed_over = True
        finally:
            if not handed_over:
                await trio.aclose_forcefully(stream)
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=body,
            request=request,
            extensions={
                "http_version": b"HTTP/" + head.http_version,
                "reason_phrase": head.reason,
                BODY_EXTENSION: body,
            },
        )


class _Exchange:
    """One request and its answer on one socket, through a fresh h11 connection; trio and
    h11 failures become httpx exceptions."""

    def __init__(self, stream: trio.abc.Stream, timeouts: _Timeouts, reused: bool) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._timeouts = timeouts
        self._reused = reused
        self._received = False

    async def head(self, request: httpx.Request) -> h11.Response:
        """Send *request* and return the answer's head (informational answers skipped).

        Raises _Stale for a reused socket that ends or breaks before any byte arrived."""
        try:
            outgoing = self.h11.send(
                h11.Request(
                    method=request.method,
                    target=request.url.raw_path,
                    headers=request.headers.raw,
                )
            )
            outgoing += self.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from None
        assert outgoing is not None
        try:
            with trio.fail_after(self._timeouts.write):
                await self.stream.send_all(outgoing)
        except trio.TooSlowError:
            raise httpx.WriteTimeout(f"not sent within {self._timeouts.write:g} s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            if self._reused:
                raise _Stale from exc
            raise httpx.WriteError(_reason(exc)) from exc
        while True:
            event = self.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.receive(HEAD_READ_BYTES))
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without an answer"
                )

    def next_event(self) -> h11.Event | type[h11.NEED_DATA]:
        """h11's next event (never PAUSED: one request per h11 connection)."""
        try:
            event = self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from None
        assert event is not h11.PAUSED
        return event  # type: ignore[return-value]

    async def receive(self, max_bytes: int) -> bytes:
        """Return the next 1..*max_bytes* bytes from the socket, ``b""`` at its end."""
        try:
            with trio.fail_after(self._timeouts.read):
                data = await self.stream.receive_some(max_bytes)
        except trio.TooSlowError:
            raise httpx.ReadTimeout(f"no data for {self._timeouts.read:g} s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            if self._reused and not self._received:
                raise _Stale from exc
            raise httpx.ReadError(_reason(exc)) from exc
        if not data and self._reused and not self._received:
            raise _Stale
        self._received = True
        return data if isinstance(data, bytes) else bytes(data)

    async def fill(self, view: memoryview) -> int:
        """Fill *view* from the socket; return the bytes written, fewer only where the
        connection ended. Each wait for the socket is bounded by the read timeout, as
        :meth:`receive`.

        On a plain TCP socket the bytes go straight into *view* (``readv`` on its descriptor,
        trio waiting only while the socket is empty): no bytes object per socket read and no
        trip through trio's scheduler for data already there. Through TLS, :meth:`receive`.
        """
        stream = self.stream
        if not isinstance(stream, trio.SocketStream):
            return await fill_by_receive(self.receive, view)
        self._received = True
        fd = stream.socket.fileno()
        filled, waited = 0, False
        with trio.CancelScope() as waiting:
            while filled < len(view):
                try:
                    got = os.readv(fd, [view[filled:]])
                except BlockingIOError:
                    if self._timeouts.read != math.inf:
                        waiting.deadline = trio.current_time() + self._timeouts.read
                    await trio.lowlevel.wait_readable(fd)
                    waited = True
                    continue
                except OSError as exc:
                    raise httpx.ReadError(_reason(exc)) from exc
                if not got:
                    break
                filled += got
            if not waited:
                await trio.lowlevel.checkpoint()  # an async call always checkpoints
        if waiting.cancelled_caught:
            raise httpx.ReadTimeout(f"no data for {self._timeouts.read:g} s")
        return filled


BODY_EXTENSION = "simvuefs.storage_body"
"""The key of an answer's :class:`StorageBody` in ``httpx.Response.extensions``: httpx wraps
the response stream, and :meth:`StorageBody.receive` reads at most what its caller wants."""


class StorageBody(httpx.AsyncByteStream):
    """An answer's body: what h11 buffered with the head, then (``Content-Length`` framing)
    the rest straight from the socket, or (other framing) everything through h11. Closing
    it returns the socket to the pool or closes it (module docstring)."""

    def __init__(
        self, pool: StoragePool, origin: Origin, exchange: _Exchange, head: h11.Response
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._exchange: _Exchange | None = exchange
        self._buffered = b""
        self._left: int | None = None
        self._ended = False
        self._keep_alive = head.http_version == b"1.1" and not any(
            name == b"connection" and b"close" in value.lower() for name, value in head.headers
        )
        length = _content_length(head)
        if length is not None:
            pieces = []
            while isinstance(event := exchange.next_event(), h11.Data):
                pieces.append(bytes(event.data))
            self._buffered = b"".join(pieces)
            self._left = length - len(self._buffered)
            if exchange.h11.trailing_data[0]:
                self._keep_alive = False  # bytes beyond the body: out of step

    async def receive(self, max_bytes: int) -> bytes:
        """Return the next 1..*max_bytes* bytes of the body, ``b""`` at its end.

        Raises httpx.RemoteProtocolError when the connection ends before the body does,
        httpx.ReadError / ReadTimeout as a socket read does."""
        exchange = self._exchange
        if exchange is None:
            raise httpx.StreamClosed()
        if not self._buffered and self._left is None and not self._ended:
            self._buffered = await _next_through_h11(exchange)
            self._ended = not self._buffered
        if self._buffered:
            out = self._buffered[:max_bytes]
            self._buffered = self._buffered[max_bytes:]
            return out
        if not self._left:
            return b""
        chunk = await exchange.receive(min(max_bytes, self._left, BODY_READ_BYTES))
        if not chunk:
            raise _ended_early(self._left)
        self._left -= len(chunk)
        return chunk

    async def readinto(self, view: memoryview) -> int:
        """Fill *view* with the next bytes of a body framed by ``Content-Length``, straight
        from the socket (:meth:`_Exchange.fill`); return how many: fewer than ``len(view)``
        only at the body's end. Other framing: through :meth:`receive`.

        Raises as :meth:`receive`."""
        exchange = self._exchange
        if exchange is None:
            raise httpx.StreamClosed()
        if self._left is None:
            return await fill_by_receive(self.receive, view)
        filled = min(len(view), len(self._buffered))
        if filled:
            view[:filled] = self._buffered[:filled]
            self._buffered = self._buffered[filled:]
        wanted = min(len(view) - filled, self._left)
        if wanted:
            got = await exchange.fill(view[filled : filled + wanted])
            self._left -= got
            if got < wanted:
                raise _ended_early(self._left)
            filled += got
        return filled

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive(BODY_READ_BYTES):
            yield chunk

    async def aclose(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is None:
            return
        if self._keep_alive and (self._left == 0 or _ended_in_step(exchange)):
            await self._pool.release(self._origin, exchange.stream)
        else:
            await trio.aclose_forcefully(exchange.stream)


def _ended_in_step(exchange: _Exchange) -> bool:
    """True when h11 read a body not framed by ``Content-Length`` to its end (a chunked
    body's last chunk, not the connection's end) and nothing beyond it."""
    connection = exchange.h11
    return connection.their_state is h11.DONE and not connection.trailing_data[0]


async def _next_through_h11(exchange: _Exchange) -> bytes:
    """The next piece of a body not framed by ``Content-Length`` (chunked, or up to the
    connection's end), read through h11; ``b""`` at its end."""
    while True:
        event = exchange.next_event()
        if event is h11.NEED_DATA:
            exchange.h11.receive_data(await exchange.receive(BODY_READ_BYTES))
        elif isinstance(event, h11.Data):
            if event.data:
                return bytes(event.data)
        else:
            return b""  # EndOfMessage, or ConnectionClosed


def _ended_early(left: int) -> httpx.RemoteProtocolError:
    """The error of a body whose connection ended *left* bytes before its end."""
    return httpx.RemoteProtocolError(f"the connection closed {left} bytes before the body's end")


def _reason(exc: BaseException) -> str:
    """What a socket failure says: trio's BrokenResourceError carries the OSError as cause."""
    return str(exc.__cause__ or exc) or type(exc).__name__


def _content_length(head: h11.Response) -> int | None:
    """The body length of *head*, when ``Content-Length`` frames it (h11 checked the value)."""
    if any(name == b"transfer-encoding" for name, _ in head.headers):
        return None
    if head.status_code in (204, 304) or head.status_code < 200:
        return 0
    for name, value in head.headers:
        if name == b"content-length":
            return int(value)
    return None

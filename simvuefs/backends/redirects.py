"""Redirects, followed below the ``httpx.AsyncClient`` as the official client (``requests``)
follows them, except where ``requests`` would send a request that cannot work.

:class:`FollowRedirects` wraps the network: an answer 301, 302, 303, 307 or 308 with a
``Location`` is followed, at most :data:`MAX_REDIRECTS` times, so that callers (API calls
and storage downloads alike) only ever see the final answer. Invariants:

- The token never leaves the origin it was configured for: ``requests`` drops the
  ``Authorization`` header when a redirect changes scheme, host or port, except from
  ``http://host`` (port 80) to ``https://host`` (port 443) (``should_strip_auth``; httpx
  does the same). Where it would drop it, the request goes nowhere instead: a Simvue API
  call without its token is refused anyway (401), and the message saying where the server
  redirects to is more useful than "rejected the token".
- A redirect that would change the method (a POST answered 301, 302 or 303, a PUT answered
  302 or 303: ``requests`` turns them into a GET without the body) is not followed: the
  call fails, naming where the server redirects to, instead of sending a GET whose answer
  would be misread.
- A request whose body is streamed (an upload from a file) is not re-sent: its 3xx answer
  goes back to the caller, as before.
- Each origin redirecting API calls (with a token) to another is logged once at WARNING,
  naming where to point the server URL to save a round trip per call.
"""

from __future__ import annotations

import contextlib
import logging

import httpx

log = logging.getLogger(__name__)

MAX_REDIRECTS = 30
"""As ``requests`` (``Session.max_redirects``)."""
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The body of a redirect answer is read (so the connection is kept) up to this many bytes.
MAX_REDIRECT_BODY = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


class RedirectRefused(httpx.TransportError):
    """A redirect simvuefs does not follow (module docstring). The message is one line that
    follows ``"METHOD url: "`` of the request (``transport.send`` puts it in front)."""


def redirect_method(method: str, status: int) -> str:
    """Return the method ``requests`` (and httpx) send after a *status* redirect."""
    if status == 303 and method != "HEAD":
        return "GET"
    if status == 302 and method != "HEAD":
        return "GET"
    if status == 301 and method == "POST":
        return "GET"
    return method


def keeps_credentials(source: httpx.URL, target: httpx.URL) -> bool:
    """Return True when ``requests`` sends the ``Authorization`` header of a request to
    *source* on to *target*: the same origin, or http (port 80) to https (port 443) on the
    same host."""
    if source.host != target.host:
        return False
    old, new = _port(source), _port(target)
    if source.scheme == target.scheme:
        return old == new
    return (source.scheme, old, target.scheme, new) == ("http", 80, "https", 443)


def _port(url: httpx.URL) -> int | None:
    return url.port or _DEFAULT_PORTS.get(url.scheme)


def _shown(url: httpx.URL) -> str:
    """*url* without user, password, query and fragment (see transport.display_url)."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def _origin_text(url: httpx.URL) -> str:
    """``scheme://host[:port]`` of *url*."""
    return str(url.copy_with(username=None, password=None, path="", query=None, fragment=None))


def _instead(source: httpx.URL, target: httpx.URL) -> str:
    """How to change the server URL so that it names *target*'s origin."""
    return f"use {_origin_text(target)} in place of {_origin_text(source)} in the server URL"


class FollowRedirects(httpx.AsyncBaseTransport):
    """Follow redirects of requests sent through *inner* (module docstring)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self._warned: set[tuple[str, str]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        first = request
        for _ in range(MAX_REDIRECTS + 1):
            replayable = isinstance(request.stream, httpx.ByteStream)  # not a streamed body
            response = await self._inner.handle_async_request(request)
            location = response.headers.get("Location")
            status = response.status_code
            if status not in REDIRECT_STATUSES or not location or not replayable:
                return response
            await _discard(response)
            target = _target(request, location)
            what = f"redirected ({status}) to {_shown(target)}"  # after "METHOD url: "
            if request is not first:
                what = f"redirected on by {_shown(request.url)} ({status}) to {_shown(target)}"
            if "Authorization" in request.headers and not keeps_credentials(request.url, target):
                raise RedirectRefused(
                    f"{what}, another origin, where simvuefs does not send the token (nor does "
                    f"the official client): if that is the Simvue server, "
                    f"{_instead(request.url, target)}",
                    request=first,
                )
            if redirect_method(request.method, status) != request.method:
                raise RedirectRefused(
                    f"{what}, which would turn it into a GET without its body: "
                    f"{_instead(request.url, target)} (or make the server redirect with 307 or "
                    "308)",
                    request=first,
                )
            self._warn(request, target)
            log.debug("%s %s: %s", first.method, _shown(first.url), what)
            request = _follow(request, target)
        raise RedirectRefused(f"more than {MAX_REDIRECTS} redirects", request=first)

    def _warn(self, request: httpx.Request, target: httpx.URL) -> None:
        pair = (_origin_text(request.url), _origin_text(target))
        if "Authorization" in request.headers and pair[0] != pair[1] and pair not in self._warned:
            self._warned.add(pair)
            log.warning(
                "the Simvue server at %s redirects API requests to %s: %s to save a round trip "
                "per request",
                *pair,
                _instead(request.url, target),
            )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _target(request: httpx.Request, location: str) -> httpx.URL:
    """The absolute URL a ``Location`` header names (relative to the request's URL)."""
    try:
        target = request.url.join(location)
    except (httpx.InvalidURL, ValueError):
        # The exception would quote the URL, query (a signature?) and all.
        raise RedirectRefused("redirected to an invalid URL", request=request) from None
    if target.scheme not in _DEFAULT_PORTS or not target.host:
        raise RedirectRefused(
            f"redirected to {_shown(target)}, not an http(s) URL", request=request
        )
    return target


def _follow(request: httpx.Request, target: httpx.URL) -> httpx.Request:
    """The same request (method, headers, body, extensions) for *target*."""
    headers = request.headers.copy()
    headers["Host"] = target.netloc.decode("ascii")  # as httpx's own redirects do
    return httpx.Request(
        request.method,
        target,
        headers=headers,
        stream=request.stream,
        extensions=request.extensions,
    )


async def _discard(response: httpx.Response) -> None:
    """Close a redirect answer, reading a small body first so its connection is kept."""
    try:
        if not response.is_stream_consumed:
            with contextlib.suppress(httpx.HTTPError):
                received = 0
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received > MAX_REDIRECT_BODY:
                        break
    finally:
        await response.aclose()

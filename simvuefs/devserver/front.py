"""The redirecting front of ``--redirect-port``: what a proxy's ``return 308 https://...``
does in front of a Simvue server.

Every request, whatever its method and path, is answered with *status* and a ``Location``
of the same path and query string on *target* (the devserver's own URL, e.g.
``https://127.0.0.1:PORT``), after its body has been read (so the client always receives
the answer). It serves nothing else and keeps no state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

REDIRECT_STATUSES = (301, 302, 303, 307, 308)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def redirector(target: str, status: int) -> App:
    """Return the ASGI application redirecting every request to *target* with *status*."""
    base = target.rstrip("/").encode("latin-1")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        location = base + path + (b"?" + query if query else b"")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"location", location), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    return app

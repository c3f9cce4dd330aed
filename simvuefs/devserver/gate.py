"""Before routing: the outage and rate-limit refusals (``Faults.refusal``), then a WAN.

:class:`FaultGate` is ASGI middleware around the whole application. A request to ``/api/``
or ``/storage/`` that the switches refuse gets its answer here, before authentication and
before any route (and any other switch) sees it, as a proxy or a rate limiter in front of
the real server would answer: ``{"detail": ...}`` JSON for the API, S3-style XML for
storage, with the refusal's headers (``Retry-After``). Admin routes are never refused.

A request let through then pays the WAN switches (``Faults.wan_delay``,
``Faults.upload_pace``): it waits one round trip before any route sees it, and a storage
upload's body is received no faster than the per-request cap (the server stops reading, so
TCP flow control slows the sender down, as a capped link would).

Invariant: a refused upload's body is read (and dropped) before the answer, so that the
client, still sending, sees the answer rather than a broken connection.
"""

from __future__ import annotations

import asyncio
import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simvuefs.devserver.faults import Refusal
from simvuefs.devserver.state import ServerState
from simvuefs.devserver.storage import s3_error
from simvuefs.devserver.web import error_response


class FaultGate:
    """ASGI middleware answering the requests ``state.faults.refusal`` turns away."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        where = _where(scope)
        refusal = self._state.faults.refusal(where) if where else None
        if refusal is None:
            if where and (delay := self._state.faults.wan_delay()):
                await asyncio.sleep(delay)
            if where == "storage" and scope["method"] in ("POST", "PUT"):
                receive = _paced(receive, self._state.faults.upload_pace())
            await self._app(scope, receive, send)
            return
        await _drain(receive)
        await _answer(refusal, where)(scope, receive, send)


def _where(scope: Scope) -> str:
    """``"api"`` or ``"storage"`` for the HTTP requests the gate may refuse, else ``""``."""
    if scope["type"] != "http":
        return ""
    path: str = scope["path"]
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/storage/"):
        return "storage"
    return ""


def _paced(receive: Receive, rate: int) -> Receive:
    """Return *receive* giving the body at no more than *rate* bytes per second (0: as is)."""
    if rate <= 0:
        return receive
    began = time.monotonic()
    received = 0

    async def paced_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if (ahead := received / rate - (time.monotonic() - began)) > 0:
                await asyncio.sleep(ahead)
        return message

    return paced_receive


def _answer(refusal: Refusal, where: str) -> Response:
    if where == "storage":
        return s3_error(refusal.status, refusal.code, refusal.message, dict(refusal.headers))
    response = error_response(refusal.status, refusal.message)
    response.headers.update(refusal.headers)
    return response


async def _drain(receive: Receive) -> None:
    """Read the request body to its end (or to the client's disconnect), dropping it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return

"""Refusals before routing: the outage and rate-limit fault switches (``Faults.refusal``).

:class:`FaultGate` is ASGI middleware around the whole application. A request to ``/api/``
or ``/storage/`` that the switches refuse gets its answer here, before authentication and
before any route (and any other switch) sees it, as a proxy or a rate limiter in front of
the real server would answer: ``{"detail": ...}`` JSON for the API, S3-style XML for
storage, with the refusal's headers (``Retry-After``). Admin routes are never refused.

Invariant: a refused upload's body is read (and dropped) before the answer, so that the
client, still sending, sees the answer rather than a broken connection.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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

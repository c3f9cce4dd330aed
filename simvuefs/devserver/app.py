"""Assemble the devserver's Starlette application from its route modules."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simvuefs.devserver import admin, api, storage, uploads
from simvuefs.devserver.gate import FaultGate
from simvuefs.devserver.state import ServerState


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods: JSON ``{"detail"}`` (XML under /storage)."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/storage/"):
        return storage.s3_error(exc.status_code, "NotFound", exc.detail)
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)


def build_app(state: ServerState) -> Starlette:
    """Return the ASGI application serving *state*."""
    return Starlette(
        routes=[
            *api.routes(state),
            *admin.routes(state),
            *storage.routes(state),
            *uploads.routes(state),
        ],
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(FaultGate, state=state)],  # outage and rate-limit switches
    )

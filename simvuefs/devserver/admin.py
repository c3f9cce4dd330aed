"""The ``/admin`` routes (not part of Simvue): traffic counters and fault switches.

They need the same bearer token as the API but are neither counted nor subject to faults.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simvuefs.devserver.faults import FaultError
from simvuefs.devserver.state import ServerState, Stats
from simvuefs.devserver.web import ApiError, Handler, authenticate, error_response, json_body


def routes(state: ServerState) -> list[Route]:
    """Return the admin routes."""

    def admin(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                authenticate(state, request)
                return await handler(request)
            except ApiError as exc:
                return error_response(exc.status, exc.detail, **exc.extra)

        return endpoint

    async def get_stats(request: Request) -> Response:
        return JSONResponse(state.stats.as_dict())

    async def reset_stats(request: Request) -> Response:
        state.stats = Stats()
        return JSONResponse(state.stats.as_dict())

    async def get_faults(request: Request) -> Response:
        return JSONResponse(state.faults.as_dict())

    async def put_faults(request: Request) -> Response:
        try:
            state.faults.update(await json_body(request))
        except FaultError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse(state.faults.as_dict())

    async def clear_faults(request: Request) -> Response:
        state.faults.clear()
        return JSONResponse(state.faults.as_dict())

    return [
        Route("/admin/stats", admin(get_stats), methods=["GET"]),
        Route("/admin/stats/reset", admin(reset_stats), methods=["POST"]),
        Route("/admin/faults", admin(get_faults), methods=["GET"]),
        Route("/admin/faults", admin(put_faults), methods=["PUT"]),
        Route("/admin/faults", admin(clear_faults), methods=["DELETE"]),
    ]

"""The ``/api`` routes: the part of the Simvue REST API the official client uses.

Every route goes through :func:`guarded`, which counts the request, checks the bearer
token (401 otherwise) and applies the API fault switches. The handlers are in ``runs.py``
and ``artifacts.py``; answers are always JSON objects (a JSON array only where the client
expects one), unless the ``malformed_json`` fault mangles them on purpose.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simvuefs.devserver.artifacts import ArtifactRoutes
from simvuefs.devserver.malformed import mangle
from simvuefs.devserver.runs import RunRoutes
from simvuefs.devserver.sharing import SharingRoutes
from simvuefs.devserver.state import ServerState
from simvuefs.devserver.web import ApiError, Handler, authenticate, error_response

log = logging.getLogger(__name__)


def guarded(state: ServerState, key: str, handler: Handler) -> Handler:
    """Wrap *handler* with request counting, authentication and the API fault switches."""

    async def endpoint(request: Request) -> Response:
        state.stats.api_requests[key] += 1
        faults = state.faults
        try:
            if refusal := faults.token_refusal(authenticate(state, request)):
                raise ApiError(401, refusal)
            if delay := faults.stall_for("api") + faults.listing_stall(key):
                await asyncio.sleep(delay)
            if status := faults.api_error(key):
                response: Response = error_response(status, "injected fault")
            else:
                response = await handler(request)
                if response.status_code == 200 and (kind := faults.malformed_json(key)):
                    response = mangle(response, kind)
        except ApiError as exc:
            response = error_response(exc.status, exc.detail, **exc.extra)
        log.debug("%s %s -> %d", request.method, request.url.path, response.status_code)
        return response

    return endpoint


def routes(state: ServerState) -> list[Route]:
    """Return the ``/api`` routes, each guarded by :func:`guarded`."""
    runs = RunRoutes(state)
    artifacts = ArtifactRoutes(state)
    sharing = SharingRoutes(state)
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/api/version", runs.version),
        ("GET", "/api/nosim/version", runs.nosim_version),
        ("GET", "/api/whoami", sharing.whoami),
        ("POST", "/api/folders", runs.create_folder),
        ("GET", "/api/folders", runs.list_folders),
        ("GET", "/api/folders/{folder_id}", runs.get_folder),
        ("POST", "/api/runs", runs.create_run),
        ("GET", "/api/runs", runs.list_runs),
        ("GET", "/api/runs/{run_id}", runs.get_run),
        ("PUT", "/api/runs/{run_id}", runs.update_run),
        ("DELETE", "/api/runs/{run_id}", runs.delete_run),
        ("GET", "/api/runs/{run_id}/abort", runs.abort_status),
        ("PUT", "/api/runs/{run_id}/heartbeat", runs.heartbeat),
        ("GET", "/api/runs/{run_id}/artifacts", artifacts.run_artifacts),
        ("GET", "/api/runs/{run_id}/artifacts/{artifact_id}", artifacts.artifact_category),
        ("PUT", "/api/runs/{run_id}/artifacts/{artifact_id}", artifacts.attach_artifact),
        ("POST", "/api/metrics", runs.accept_data),
        ("POST", "/api/events", runs.accept_data),
        ("POST", "/api/artifacts", artifacts.create_artifact),
        ("GET", "/api/artifacts", artifacts.list_artifacts),
        ("GET", "/api/artifacts/{artifact_id}", artifacts.get_artifact),
        ("PUT", "/api/artifacts/{artifact_id}", artifacts.update_artifact),
        ("DELETE", "/api/artifacts/{artifact_id}", artifacts.delete_artifact),
    ]
    return [
        Route(path, guarded(state, f"{method} {path}", handler), methods=[method])
        for method, path, handler in table
    ]

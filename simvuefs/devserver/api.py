"""The ``/api`` routes: the part of the Simvue REST API the official client uses.

Every route goes through :func:`guarded`, which counts the request, checks the bearer
token (401 otherwise) and applies the API fault switches. Answers are always JSON objects
(a JSON array only where the client expects one); errors are ``{"detail": ...}``, with
FastAPI-style validation details for 422 as the client's error formatting expects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simvuefs.devserver.auth import TokenError, verify_token
from simvuefs.devserver.filters import QueryError
from simvuefs.devserver.state import NOSIM_VERSION, SERVER_VERSION, USER_NAME, ServerState
from simvuefs.devserver.storage import download_url, upload_slot
from simvuefs.devserver.store import now_timestamp
from simvuefs.models import CATEGORIES, NAME_REGEX

log = logging.getLogger(__name__)

PAGE_SIZE = 100
"""Largest page of ``GET /api/runs`` and ``GET /api/artifacts`` (as the client asks)."""

RUN_STATUSES = ("created", "running", "completed", "failed", "terminated", "lost")
_FINISHED = ("completed", "failed", "terminated", "lost")
_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "dusty",
    "eager",
    "fuzzy",
    "gentle",
    "hollow",
    "icy",
    "jolly",
    "keen",
    "lucky",
    "misty",
    "noble",
    "quiet",
    "rapid",
)
_NOUNS = (
    "anchor",
    "beacon",
    "comet",
    "delta",
    "ember",
    "falcon",
    "glacier",
    "harbor",
    "island",
    "jet",
    "kernel",
    "lagoon",
    "meadow",
    "nebula",
    "orbit",
    "pulsar",
)

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """Answer the request with *status* and ``{"detail": detail, **extra}``."""

    def __init__(self, status: int, detail: object, **extra: object) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def error_response(status: int, detail: object, **extra: object) -> JSONResponse:
    """Return the JSON error answer the official client parses."""
    return JSONResponse({"detail": detail, **extra}, status)


def invalid(location: str, message: str) -> ApiError:
    """Return a 422 in FastAPI's format for the body or query field *location*."""
    where, _, name = location.partition(".")
    return ApiError(422, [{"loc": [where, name], "msg": message, "type": "value_error"}])


def authenticate(state: ServerState, request: Request) -> dict[str, Any]:
    """Return the claims of the request's bearer token, or raise ApiError(401)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Not authenticated")
    try:
        return verify_token(state.secret, token.strip())
    except TokenError as exc:
        raise ApiError(401, str(exc)) from None


def guarded(state: ServerState, key: str, handler: Handler) -> Handler:
    """Wrap *handler* with request counting, authentication and the API fault switches."""

    async def endpoint(request: Request) -> Response:
        state.stats.api_requests[key] += 1
        try:
            authenticate(state, request)
            if delay := state.faults.stall_for("api"):
                await asyncio.sleep(delay)
            if status := state.faults.api_error(key):
                response: Response = error_response(status, "injected fault")
            else:
                response = await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.detail, **exc.extra)
        log.debug("%s %s -> %d", request.method, request.url.path, response.status_code)
        return response

    return endpoint


async def json_body(request: Request) -> dict[str, Any]:
    """Return the request's JSON object body, ``{}`` for an empty body, or raise 422."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(422, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "request body must be a JSON object")
    return body


def json_query(request: Request, name: str, default: Any) -> Any:
    """Return the JSON-encoded query parameter *name*, or *default* when absent."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid(f"query.{name}", "must be JSON") from None


def int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Return the integer query parameter *name*, clamped to [low, high]."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"query.{name}", "must be an integer") from None
    return max(low, min(high, value))


def _check_name(value: object, location: str) -> str:
    if not isinstance(value, str) or not NAME_REGEX.match(value):
        raise invalid(location, f"must be a non-empty string matching {NAME_REGEX.pattern}")
    return value


def _check_folder(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise invalid("body.folder", "must be a path starting with '/'")
    return value if value == "/" else value.rstrip("/")


def _generated_name() -> str:
    rng = random.SystemRandom()
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randrange(1000)}"


class Api:
    """Route handlers bound to the server state."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.store = state.store

    def _base(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def _artifact_json(self, request: Request, artifact: dict[str, Any]) -> dict[str, Any]:
        return {**artifact, "url": download_url(self.state, self._base(request), artifact["id"])}

    def _run_or_404(self, run_id: str) -> dict[str, Any]:
        run = self.store.get_run(run_id)
        if run is None:
            raise ApiError(404, "No such run")
        return run

    def _artifact_or_404(self, artifact_id: str) -> dict[str, Any]:
        artifact = self.store.get_artifact(artifact_id)
        if artifact is None:
            raise ApiError(404, "No such artifact")
        return artifact

    # -- server ----------------------------------------------------------------------------

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": SERVER_VERSION})

    async def nosim_version(self, request: Request) -> Response:
        """Answered (not 404, which the protocol allows): after a 404 the official Sender
        writes ``"nosim": "None"`` into the offline cache's version.json, and every later
        configuration load of the client in that cache then fails to parse it."""
        return JSONResponse({"version": NOSIM_VERSION})

    # -- folders ---------------------------------------------------------------------------

    async def create_folder(self, request: Request) -> Response:
        body = await json_body(request)
        path = body.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise invalid("body.path", "must be a path starting with '/'")
        folder, created = self.store.ensure_folder(_check_folder(path))
        if not created:
            return error_response(409, "Folder already exists", id=folder["id"])
        return JSONResponse(folder)

    async def list_folders(self, request: Request) -> Response:
        paths = []
        for text in json_query(request, "filters", []):
            field, op, value = str(text).partition(" == ")
            if field != "path" or not op:
                raise ApiError(400, f"unsupported folder filter: {text!r}")
            paths.append(value)
        folders = self.store.list_folders()
        if paths:
            folders = [f for f in folders if f["path"] in paths]
        return JSONResponse({"data": folders, "count": len(folders)})

    async def get_folder(self, request: Request) -> Response:
        folder = self.store.get_folder(request.path_params["folder_id"])
        if folder is None:
            raise ApiError(404, "No such folder")
        return JSONResponse(folder)

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, request: Request) -> Response:
        body = await json_body(request)
        body.pop("id", None)
        name = body.get("name") or _generated_name()
        status = body.get("status") or "running"
        if status not in RUN_STATUSES:
            raise invalid("body.status", f"must be one of {', '.join(RUN_STATUSES)}")
        now = now_timestamp()
        doc: dict[str, Any] = {
            "description": None,
            "tags": [],
            "metadata": {},
            "system": {},
            "ttl": None,
            "heartbeat_timeout": None,
            "notifications": {"state": "none"},
            "visibility": {"tenant": False, "public": False, "users": []},
            "alerts": [],
            "starred": False,
            "started": None,
            "endtime": None,
            **body,
            "name": _check_name(name, "body.name"),
            "folder": _check_folder(body.get("folder", "/")),
            "status": status,
            "created": now,
            "user": USER_NAME,
        }
        if status != "created" and not doc["started"]:
            doc["started"] = now
        if status in _FINISHED and not doc["endtime"]:
            doc["endtime"] = now
        return JSONResponse(self.store.create_run(doc))

    async def get_run(self, request: Request) -> Response:
        return JSONResponse(self._run_or_404(request.path_params["run_id"]))

    async def update_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = self._run_or_404(run_id)
        changes = await json_body(request)
        for frozen in ("id", "created", "user"):
            changes.pop(frozen, None)
        if "name" in changes:
            _check_name(changes["name"], "body.name")
        if "folder" in changes:
            changes["folder"] = _check_folder(changes["folder"])
        status = changes.get("status", run["status"])
        if status not in RUN_STATUSES:
            raise invalid("body.status", f"must be one of {', '.join(RUN_STATUSES)}")
        if status == "running" and not run.get("started") and "started" not in changes:
            changes["started"] = now_timestamp()
        if status in _FINISHED and not run.get("endtime") and "endtime" not in changes:
            changes["endtime"] = now_timestamp()
        self.store.update_run(run_id, changes)
        return JSONResponse({"id": run_id})

    async def delete_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not self.store.delete_run(run_id):
            raise ApiError(404, "No such run")
        return JSONResponse({"id": run_id})

    async def list_runs(self, request: Request) -> Response:
        filters = json_query(request, "filters", [])
        sorting = json_query(request, "sorting", [])
        if not isinstance(filters, list) or not isinstance(sorting, list):
            raise invalid("query.filters", "filters and sorting must be JSON lists")
        count = int_query(request, "count", PAGE_SIZE, 0, PAGE_SIZE)
        start = int_query(request, "start", 0, 0, 2**62)
        try:
            runs, total = self.store.query_runs(filters, USER_NAME, start, count, sorting)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse({"data": runs, "count": total})

    async def abort_status(self, request: Request) -> Response:
        self._run_or_404(request.path_params["run_id"])
        return JSONResponse({"status": False})

    async def heartbeat(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        self._run_or_404(run_id)
        self.store.update_run(run_id, {"heartbeat": now_timestamp()})
        return JSONResponse({"id": run_id})

    async def accept_data(self, request: Request) -> Response:
        """Metrics and events (msgpack): accepted and not stored."""
        await request.body()
        return JSONResponse({})

    # -- artifacts -------------------------------------------------------------------------

    async def create_artifact(self, request: Request) -> Response:
        body = await json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("body.name", "must be a non-empty string")
        checksum = body.get("checksum")
        if not isinstance(checksum, str) or len(checksum) != 64:
            raise invalid("body.checksum", "must be a hex sha256")
        try:
            bytes.fromhex(checksum)
        except ValueError:
            raise invalid("body.checksum", "must be a hex sha256") from None
        size = body.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid("body.size", "must be a non-negative integer")
        checksum = checksum.lower()
        known = self.state.dedup and self.store.has_blob(checksum)
        artifact = self.store.create_artifact(
            {
                "name": name,
                "original_path": str(body.get("original_path") or ""),
                "size": size,
                "mime_type": str(body.get("mime_type") or "application/octet-stream"),
                "checksum": checksum,
                "metadata": body.get("metadata"),
                "uploaded": known,
                "created": now_timestamp(),
                "storage_id": "devserver",
                "user": USER_NAME,
            }
        )
        answer: dict[str, Any] = {"id": artifact["id"], "url": None}
        if not known:
            answer.update(upload_slot(self.state, self._base(request), artifact["id"], checksum))
        return JSONResponse(answer)

    async def get_artifact(self, request: Request) -> Response:
        artifact = self._artifact_or_404(request.path_params["artifact_id"])
        return JSONResponse(self._artifact_json(request, artifact))

    async def update_artifact(self, request: Request) -> Response:
        artifact_id = request.path_params["artifact_id"]
        self._artifact_or_404(artifact_id)
        changes = await json_body(request)
        for frozen in ("id", "checksum", "created", "user"):
            changes.pop(frozen, None)
        self.store.update_artifact(artifact_id, changes)
        return JSONResponse({"id": artifact_id})

    async def delete_artifact(self, request: Request) -> Response:
        artifact_id = request.path_params["artifact_id"]
        if not self.store.delete_artifact(artifact_id):
            raise ApiError(404, "No such artifact")
        return JSONResponse({"id": artifact_id})

    async def list_artifacts(self, request: Request) -> Response:
        run_ids = json_query(request, "runs", None)
        if run_ids is not None and (
            not isinstance(run_ids, list) or not all(isinstance(r, str) for r in run_ids)
        ):
            raise invalid("query.runs", "must be a JSON list of run ids")
        sorting = json_query(request, "sorting", [])
        if not isinstance(sorting, list):
            raise invalid("query.sorting", "must be a JSON list")
        count = int_query(request, "count", PAGE_SIZE, 0, PAGE_SIZE)
        start = int_query(request, "start", 0, 0, 2**62)
        try:
            artifacts, total = self.store.query_artifacts(run_ids, start, count, sorting)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from None
        data = [self._artifact_json(request, a) for a in artifacts]
        return JSONResponse({"data": data, "count": total})

    async def run_artifacts(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        self._run_or_404(run_id)
        category = request.query_params.get("category") or None
        if category is not None and category not in CATEGORIES:
            raise invalid("query.category", f"must be one of {', '.join(CATEGORIES)}")
        name = request.query_params.get("name")
        artifacts = self.store.run_artifacts(run_id, category, name)
        return JSONResponse([self._artifact_json(request, a) for a in artifacts])

    async def artifact_category(self, request: Request) -> Response:
        category = self.store.category_of(
            request.path_params["run_id"], request.path_params["artifact_id"]
        )
        if category is None:
            raise ApiError(404, "Artifact not attached to this run")
        return JSONResponse({"category": category})

    async def attach_artifact(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        artifact_id = request.path_params["artifact_id"]
        self._run_or_404(run_id)
        self._artifact_or_404(artifact_id)
        category = (await json_body(request)).get("category")
        if category not in CATEGORIES:
            raise invalid("body.category", f"must be one of {', '.join(CATEGORIES)}")
        self.store.attach(run_id, artifact_id, category)
        return JSONResponse({"run": run_id, "artifact": artifact_id, "category": category})


def routes(state: ServerState) -> list[Route]:
    """Return the ``/api`` routes, each guarded by :func:`guarded`."""
    api = Api(state)
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/api/version", api.version),
        ("GET", "/api/nosim/version", api.nosim_version),
        ("POST", "/api/folders", api.create_folder),
        ("GET", "/api/folders", api.list_folders),
        ("GET", "/api/folders/{folder_id}", api.get_folder),
        ("POST", "/api/runs", api.create_run),
        ("GET", "/api/runs", api.list_runs),
        ("GET", "/api/runs/{run_id}", api.get_run),
        ("PUT", "/api/runs/{run_id}", api.update_run),
        ("DELETE", "/api/runs/{run_id}", api.delete_run),
        ("GET", "/api/runs/{run_id}/abort", api.abort_status),
        ("PUT", "/api/runs/{run_id}/heartbeat", api.heartbeat),
        ("GET", "/api/runs/{run_id}/artifacts", api.run_artifacts),
        ("GET", "/api/runs/{run_id}/artifacts/{artifact_id}", api.artifact_category),
        ("PUT", "/api/runs/{run_id}/artifacts/{artifact_id}", api.attach_artifact),
        ("POST", "/api/metrics", api.accept_data),
        ("POST", "/api/events", api.accept_data),
        ("POST", "/api/artifacts", api.create_artifact),
        ("GET", "/api/artifacts", api.list_artifacts),
        ("GET", "/api/artifacts/{artifact_id}", api.get_artifact),
        ("PUT", "/api/artifacts/{artifact_id}", api.update_artifact),
        ("DELETE", "/api/artifacts/{artifact_id}", api.delete_artifact),
    ]
    return [
        Route(path, guarded(state, f"{method} {path}", handler), methods=[method])
        for method, path, handler in table
    ]

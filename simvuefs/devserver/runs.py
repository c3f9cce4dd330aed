"""API routes for the server itself, folders, runs, metrics and events."""

from __future__ import annotations

import random
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simvuefs.devserver import synthetic
from simvuefs.devserver.filters import QueryError
from simvuefs.devserver.sharing import check_owner, check_visible, requester
from simvuefs.devserver.state import NOSIM_VERSION, SERVER_VERSION, ServerState
from simvuefs.devserver.store import now_timestamp
from simvuefs.devserver.web import (
    PAGE_SIZE,
    ApiError,
    error_response,
    filters_query,
    int_query,
    invalid,
    json_body,
    json_query,
)
from simvuefs.models import NAME_REGEX

RUN_STATUSES = ("created", "running", "completed", "failed", "terminated", "lost")
_FINISHED = ("completed", "failed", "terminated", "lost")
# Words for names of runs created without one (the official client reads the name back).
_ADJECTIVES = ("amber", "brisk", "calm", "dusty", "eager", "fuzzy", "gentle", "keen")
_NOUNS = ("anchor", "beacon", "comet", "delta", "ember", "falcon", "harbor", "orbit")


def _check_name(value: object, location: str) -> str:
    if not isinstance(value, str) or not NAME_REGEX.match(value):
        raise invalid(location, f"must be a non-empty string matching {NAME_REGEX.pattern}")
    return value


def _check_folder(value: object, location: str = "body.folder") -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise invalid(location, "must be a path starting with '/'")
    return value if value == "/" else value.rstrip("/")


def _generated_name() -> str:
    rng = random.SystemRandom()
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randrange(1000)}"


# --realistic: GET /api/runs sends each of these fields only when its flag
# ``return_<field>`` is true (the Simvue docs: "by default only basic information"; the
# official Client.get_runs sends every flag, False unless asked), and every other field (the
# basic ones: name, folder, status, tags, description, user, created, started, endtime, ...)
# unless ``return_basic`` is false: simvue-cli's ``run list`` sends no flag and reads name,
# folder, status and created of every entry. ``id`` always. ``return_timing`` selects
# nothing here: the devserver keeps no timing beyond the basic timestamps. The fault switch
# ``basic_only_when_asked`` makes every listing (either mode) select its fields this way,
# with the basic ones only when ``return_basic`` is true.
FLAGGED_FIELDS = ("metadata", "system", "metrics", "alerts")
NEWEST_FIRST = [{"id": "created", "desc": True}]
"""--realistic: the order of GET /api/runs without ``sorting`` (simvue-cli's default)."""


def _flag(request: Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter as requests sends one (``True``/``False``)."""
    value = request.query_params.get(name)
    return default if value is None else value.strip().lower() in ("true", "1")


def _listed_fields(
    runs: list[dict[str, Any]], request: Request, basic_default: bool = True
) -> list[dict[str, Any]]:
    """The *runs* as a --realistic listing sends them for *request*'s ``return_*`` flags
    (the basic fields unless ``return_basic`` is false, or with *basic_default* false only
    when it is true)."""
    basic = _flag(request, "return_basic", default=basic_default)
    flagged = {field for field in FLAGGED_FIELDS if _flag(request, f"return_{field}")}
    return [
        {
            key: value
            for key, value in run.items()
            if key == "id" or key in flagged or (basic and key not in FLAGGED_FIELDS)
        }
        for run in runs
    ]


def _page_response(texts: list[str], total: int) -> Response:
    """A runs page ``{"data": [...], "count": total}`` from the JSON *texts* of its runs,
    joined as they are (every run sent with all its fields: no selection to make)."""
    body = '{"data":[' + ",".join(texts) + f'],"count":{total}}}'
    return Response(body.encode(), media_type="application/json")


class RunRoutes:
    """Handlers for the server, folder, run, metrics and events endpoints."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.store = state.store

    def _run_or_404(self, run_id: str) -> dict[str, Any]:
        run = self.store.get_run(run_id) or synthetic.run(run_id, self.state.faults.extra_runs)
        if run is None:
            raise ApiError(404, "No such run")
        return run

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
        folder, created = self.store.ensure_folder(_check_folder(body.get("path"), "body.path"))
        if not created:
            return error_response(409, "Folder already exists", id=folder["id"])
        return JSONResponse(folder)

    async def list_folders(self, request: Request) -> Response:
        paths = []
        for text in filters_query(request):
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
            "user": requester(self.state, request),
        }
        if status != "created" and not doc["started"]:
            doc["started"] = now
        if status in _FINISHED and not doc["endtime"]:
            doc["endtime"] = now
        return JSONResponse(self.store.create_run(doc))

    async def get_run(self, request: Request) -> Response:
        check_visible(self.state, request, request.path_params["run_id"])
        return JSONResponse(self._run_or_404(request.path_params["run_id"]))

    async def update_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        check_owner(self.state, request, run_id)
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
        check_owner(self.state, request, run_id)
        if not self.store.delete_run(run_id):
            raise ApiError(404, "No such run")
        return JSONResponse({"id": run_id})

    async def list_runs(self, request: Request) -> Response:
        filters = filters_query(request)
        sorting = json_query(request, "sorting", [])
        if not isinstance(sorting, list):
            raise invalid("query.sorting", "sorting must be a JSON list")
        count = self.state.faults.page_cap(int_query(request, "count", PAGE_SIZE, 0, PAGE_SIZE))
        start = int_query(request, "start", 0, 0, 2**62)
        if self.state.realistic and not sorting:
            sorting = NEWEST_FIRST
        extra = self.state.faults.extra_runs if not filters else 0
        basic_default = self.state.faults.basic_by_default()
        selected = self.state.realistic or not basic_default
        query = (filters, requester(self.state, request), start, count, sorting)
        try:
            if not extra and not selected:
                texts, total = self.store.query_runs_json(*query)
                return _page_response(texts, total)
            runs, total = self.store.query_runs(*query)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from None
        if extra:
            runs += synthetic.runs_page(extra, start + len(runs) - total, count - len(runs))
            total += extra
        if selected:
            runs = _listed_fields(runs, request, basic_default)
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

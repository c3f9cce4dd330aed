"""The ``/admin`` routes (not part of Simvue): counters, fault switches, tokens, raw records.

They need the same bearer token as the API but are neither counted nor subject to faults
(a token the token faults refuse still works here, so a test can always switch them off).

- ``POST /admin/tokens`` mints a token (``{"token": ...}``) for ``user`` (default: the
  default user), first moving that user to ``tenant`` when one is given (``sharing.py``);
  with ``{"revoke_others": true}`` every token issued before it, of every user, gets 401
  from the API (the ``token_not_before`` switch).
- ``POST /admin/runs`` stores a run document as given, without the API's name checks, and
  ``POST /admin/artifacts`` an artifact record (with optional text ``content``) attached to
  a run: how tests put hostile names on the server, and runs of other users (the run's
  ``user`` and ``visibility`` are stored as given; default: the default user's, private).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simvuefs.devserver.auth import mint_token, verify_token
from simvuefs.devserver.faults import FaultError
from simvuefs.devserver.state import USER_NAME, ServerState, Stats
from simvuefs.devserver.store import now_timestamp
from simvuefs.devserver.web import ApiError, Handler, authenticate, error_response, json_body
from simvuefs.models import CATEGORIES

_USER_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
"""What user and tenant names may be (an e-mail address is one)."""


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

    def stats() -> dict[str, Any]:
        return {**state.stats.as_dict(), "faults_injected": dict(state.faults.injected)}

    async def get_stats(request: Request) -> Response:
        return JSONResponse(stats())

    async def reset_stats(request: Request) -> Response:
        state.stats = Stats()
        state.faults.injected.clear()
        return JSONResponse(stats())

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

    async def new_token(request: Request) -> Response:
        body = await json_body(request)
        lifetime = body.get("lifetime", 3600.0)
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            raise ApiError(422, "lifetime must be a positive number of seconds")
        user, tenant = body.get("user", USER_NAME), body.get("tenant")
        if not isinstance(user, str) or not _USER_NAME.fullmatch(user):
            raise ApiError(422, f"user must be a name matching {_USER_NAME.pattern}")
        if tenant is not None:
            if not isinstance(tenant, str) or not _USER_NAME.fullmatch(tenant):
                raise ApiError(422, f"tenant must be a name matching {_USER_NAME.pattern}")
            state.store.set_tenant(user, tenant)
        token = mint_token(state.secret, user, float(lifetime))
        if body.get("revoke_others"):
            issued = verify_token(state.secret, token)["iat"]
            state.faults.update({"token_not_before": float(issued)})
        return JSONResponse({"token": token})

    async def raw_run(request: Request) -> Response:
        doc = await json_body(request)
        doc.pop("id", None)
        now = now_timestamp()
        doc = {"folder": "/", "status": "running", "created": now, "user": USER_NAME, **doc}
        doc["name"] = doc.get("name") if isinstance(doc.get("name"), str) else str(doc.get("name"))
        for key in ("folder", "status", "created"):
            if not isinstance(doc[key], str):
                raise ApiError(422, f"{key} must be a string")
        return JSONResponse({"id": state.store.create_run(doc)["id"]})

    async def raw_artifact(request: Request) -> Response:
        body = await json_body(request)
        run_id, category = body.get("run"), body.get("category", "output")
        record, content = body.get("record", {}), body.get("content", "")
        if not isinstance(run_id, str) or state.store.get_run(run_id) is None:
            raise ApiError(404, "No such run")
        if category not in CATEGORIES or not isinstance(record, dict):
            raise ApiError(422, "category must be input/output/code and record an object")
        if not isinstance(content, str):
            raise ApiError(422, "content must be a string")
        data = content.encode("utf-8")
        checksum = hashlib.sha256(data).hexdigest()
        if not state.store.has_blob(checksum):
            state.store.write_blob(checksum, [data])
        record.pop("id", None)
        doc = {
            "name": "",
            "original_path": "/raw",
            "size": len(data),
            "mime_type": "application/octet-stream",
            "metadata": None,
            "uploaded": True,
            "created": now_timestamp(),
            "storage_id": "devserver",
            "user": USER_NAME,
            **record,
            "checksum": checksum,
        }
        doc["name"] = doc["name"] if isinstance(doc["name"], str) else str(doc["name"])
        artifact = state.store.create_artifact(doc)
        state.store.attach(run_id, artifact["id"], category)
        return JSONResponse({"id": artifact["id"]})

    return [
        Route("/admin/stats", admin(get_stats), methods=["GET"]),
        Route("/admin/stats/reset", admin(reset_stats), methods=["POST"]),
        Route("/admin/faults", admin(get_faults), methods=["GET"]),
        Route("/admin/faults", admin(put_faults), methods=["PUT"]),
        Route("/admin/faults", admin(clear_faults), methods=["DELETE"]),
        Route("/admin/tokens", admin(new_token), methods=["POST"]),
        Route("/admin/runs", admin(raw_run), methods=["POST"]),
        Route("/admin/artifacts", admin(raw_artifact), methods=["POST"]),
    ]

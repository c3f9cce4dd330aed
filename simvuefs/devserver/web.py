"""Request and answer helpers shared by the API and admin routes.

Answers are JSON; errors are ``{"detail": ...}`` (with more keys where the client reads
them, like the ``id`` of a 409), and 422 carries FastAPI-style validation details, which is
what the official client's error formatting expects.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simvuefs.devserver.auth import TokenError, verify_token
from simvuefs.devserver.state import ServerState

Handler = Callable[[Request], Awaitable[Response]]

PAGE_SIZE = 100
"""Largest page of ``GET /api/runs`` and ``GET /api/artifacts`` (as the client asks)."""


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


def filters_query(request: Request) -> list[Any]:
    """Return the ``filters`` of a listing, as either client sends them: one parameter holding
    a JSON list (``Client.get_runs`` dumps it), or the raw filter strings of repeated
    ``filters`` parameters (what ``requests`` makes of a list: ``ArtifactBase.runs``)."""
    raw = [value for value in request.query_params.getlist("filters") if value]
    if len(raw) == 1:
        try:
            parsed = json.loads(raw[0])
        except ValueError:
            return raw
        if not isinstance(parsed, list):
            raise invalid("query.filters", "filters must be a JSON list or filter strings")
        return parsed
    return raw


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

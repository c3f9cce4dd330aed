"""Users, tenants and shared runs: who is asking, what they may see, what they may change.

Every API token names its user in ``sub`` (``--write-config`` writes one for
:data:`~simvuefs.devserver.store.DEFAULT_USER`; ``POST /admin/tokens`` mints them for any
user, optionally moving that user to another tenant). Rules, the same in both modes:

- A run's owner is its ``user`` (set from the token at ``POST /api/runs``; stored as given by
  ``POST /admin/runs``). Who else sees it is its ``visibility``
  (``{"public": bool, "tenant": bool, "users": [names]}``), decided in SQL by
  ``Store.query_runs``/``Store.visible_run``.
- ``GET /api/runs`` lists only the runs the token's user may see (``user == self`` narrows
  it to their own); ``GET /api/runs/{id}`` and ``GET /api/runs/{id}/artifacts`` answer 404
  for a run the user may not see.
- Only the owner may attach artifacts to a run, change it or delete it: anyone else gets
  403 (a run they cannot see: 404), before anything is changed.
- ``GET /api/whoami`` answers ``{"user": name, "tenant": tenant}``, as simvue-cli's
  ``whoami`` and the client's ``Stats.whoami`` read it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simvuefs.devserver.state import ServerState
from simvuefs.devserver.store import DEFAULT_USER, run_owner
from simvuefs.devserver.web import ApiError, authenticate

NOT_OWNER = "Forbidden: this run belongs to another user"
"""The detail of the 403 for a change to another user's run."""


def requester(state: ServerState, request: Request) -> str:
    """Return the user the request's token names (401 without a valid token)."""
    user = authenticate(state, request).get("sub")
    return user if isinstance(user, str) and user else DEFAULT_USER


def check_visible(state: ServerState, request: Request, run_id: str) -> None:
    """Raise ApiError 404 when the stored run *run_id* is one the requester may not see
    (runs that are not stored, the synthetic ones, are left to the caller)."""
    if state.store.get_run(run_id) is None:
        return
    if state.store.visible_run(run_id, requester(state, request)) is None:
        raise ApiError(404, "No such run")


def check_owner(state: ServerState, request: Request, run_id: str) -> None:
    """Raise ApiError 403 unless the requester owns the stored run *run_id* (404 when they
    may not even see it; runs that are not stored are left to the caller)."""
    run = state.store.get_run(run_id)
    if run is None:
        return
    user = requester(state, request)
    if state.store.visible_run(run_id, user) is None:
        raise ApiError(404, "No such run")
    if run_owner(run) != user:
        raise ApiError(403, NOT_OWNER)


class SharingRoutes:
    """The handler of ``GET /api/whoami``."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def whoami(self, request: Request) -> Response:
        user = requester(self.state, request)
        return JSONResponse({"user": user, "tenant": self.state.store.tenant_of(user)})

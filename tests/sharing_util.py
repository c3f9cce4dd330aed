"""Other users of a devserver, for the tests of shared runs (server and mount level).

:func:`token_for` mints a token for any user over ``POST /admin/tokens``; :func:`api_as`
sends an API request with it; :func:`seeded_names` lists what ``--seed multiuser`` makes
visible to each user, from the seed's own description (``simvuefs.devserver.seed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from simvuefs.devserver import seed
from simvuefs.devserver.store import DEFAULT_TENANT, DEFAULT_USER

if TYPE_CHECKING:
    from testbed.devserver import DevServer

MULTIUSER = ("--seed", "multiuser", "--large-size", "64KiB")
"""Devserver arguments: the demo plus the runs of other users (small large artifact)."""


def token_for(server: DevServer, user: str, tenant: str | None = None) -> str:
    """Return a new API token of *user* (moved to *tenant* first, when given)."""
    body: dict[str, Any] = {"user": user}
    if tenant is not None:
        body["tenant"] = tenant
    answer = server.http.post("/admin/tokens", json=body)
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def api_as(token: str, server: DevServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Send ``method /api{path}`` to *server* with *token*."""
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.request(method, server.api_url + path, headers=headers, timeout=30, **kwargs)


def tenant_of(user: str) -> str:
    return seed.OTHER_USERS.get(user, DEFAULT_TENANT)


def seeded_names(user: str) -> list[str]:
    """The names of the ``--seed multiuser`` runs *user* sees (sorted, duplicates kept)."""
    runs = [*seed.RUNS, *seed.SHARED_RUNS]
    return sorted(run.name for run in runs if _sees(user, run))


def _sees(user: str, run: seed.SeedRun) -> bool:
    return (
        run.user == user
        or "public" in run.visibility
        or ("tenant" in run.visibility and tenant_of(run.user) == tenant_of(user))
        or user in run.visibility
    )


SHARED_WITH_ME = [run for run in seed.SHARED_RUNS if _sees(DEFAULT_USER, run)]
"""The seeded runs of other users the default user sees."""

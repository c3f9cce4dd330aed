"""API routes for artifacts and their attachment to runs (many-to-many, a category per pair).

Every artifact the API returns carries a freshly signed download ``url``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simvuefs.devserver import synthetic
from simvuefs.devserver.filters import QueryError
from simvuefs.devserver.sharing import check_owner, check_visible, requester
from simvuefs.devserver.state import ServerState
from simvuefs.devserver.storage import download_url, upload_slot
from simvuefs.devserver.store import now_timestamp
from simvuefs.devserver.web import (
    PAGE_SIZE,
    ApiError,
    int_query,
    invalid,
    json_body,
    json_query,
)
from simvuefs.models import CATEGORIES

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class ArtifactRoutes:
    """Handlers for the artifact endpoints."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.store = state.store

    def _base(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def _artifact_json(self, request: Request, artifact: dict[str, Any]) -> dict[str, Any]:
        return {**artifact, "url": download_url(self.state, self._base(request), artifact)}

    def _run_or_404(self, run_id: str) -> None:
        if self.store.get_run(run_id) is None and not synthetic.run(
            run_id, self.state.faults.extra_runs
        ):
            raise ApiError(404, "No such run")

    def _artifact_or_404(self, artifact_id: str) -> dict[str, Any]:
        artifact = self.store.get_artifact(artifact_id) or synthetic.artifact(
            artifact_id, self.state.faults.extra_artifacts
        )
        if artifact is None:
            raise ApiError(404, "No such artifact")
        return artifact

    # -- artifacts -------------------------------------------------------------------------

    async def create_artifact(self, request: Request) -> Response:
        body = await json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("body.name", "must be a non-empty string")
        if self.state.faults.name_rejected(name):
            raise invalid("body.name", f"the name {name!r} is not allowed (injected)")
        checksum = body.get("checksum")
        if not isinstance(checksum, str) or not _SHA256_HEX.fullmatch(checksum):
            raise invalid("body.checksum", "must be a hex sha256")
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
                "user": requester(self.state, request),
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
        count = self.state.faults.page_cap(int_query(request, "count", PAGE_SIZE, 0, PAGE_SIZE))
        start = int_query(request, "start", 0, 0, 2**62)
        try:
            artifacts, total = self.store.query_artifacts(run_ids, start, count, sorting)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from None
        data = [self._artifact_json(request, a) for a in artifacts]
        return JSONResponse({"data": data, "count": total})

    async def run_artifacts(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        check_visible(self.state, request, run_id)
        self._run_or_404(run_id)
        category = request.query_params.get("category") or None
        if category is not None and category not in CATEGORIES:
            raise invalid("query.category", f"must be one of {', '.join(CATEGORIES)}")
        name = request.query_params.get("name")
        artifacts = self.store.run_artifacts(run_id, category, name)
        artifacts += synthetic.run_artifacts(self.state.faults.extra_artifacts, category, name)
        return JSONResponse([self._artifact_json(request, a) for a in artifacts])

    async def artifact_category(self, request: Request) -> Response:
        run_id, artifact_id = request.path_params["run_id"], request.path_params["artifact_id"]
        category = self.store.category_of(run_id, artifact_id)
        if category is None and synthetic.artifact(artifact_id, self.state.faults.extra_artifacts):
            self._run_or_404(run_id)
            category = synthetic.CATEGORY
        if category is None:
            raise ApiError(404, "Artifact not attached to this run")
        return JSONResponse({"category": category})

    async def attach_artifact(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        artifact_id = request.path_params["artifact_id"]
        check_owner(self.state, request, run_id)
        self._run_or_404(run_id)
        self._artifact_or_404(artifact_id)
        category = (await json_body(request)).get("category")
        if category not in CATEGORIES:
            raise invalid("body.category", f"must be one of {', '.join(CATEGORIES)}")
        self.store.attach(run_id, artifact_id, category)
        return JSONResponse({"run": run_id, "artifact": artifact_id, "category": category})

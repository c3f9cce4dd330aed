"""Broken API answers for the ``malformed_json`` fault (see faults.MALFORMED_KINDS).

The status stays 200, so a client cannot tell the answer is bad before parsing it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response

NOT_JSON_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
"""What a misconfigured proxy in front of the API might send with status 200."""


def mangle(response: Response, kind: str) -> Response:
    """Return a 200 answer that breaks *response*'s JSON body the way *kind* says."""
    body = bytes(response.body)
    if kind == "not_json":
        return Response(NOT_JSON_PAGE, 200, media_type="text/html")
    if kind == "wrong_types":
        try:
            return JSONResponse(swap_types(json.loads(body)))
        except ValueError:
            pass  # not JSON to begin with: truncate it instead
    return Response(body[: len(body) // 2] or b"{", 200, media_type="application/json")


def swap_types(value: Any) -> Any:
    """Return *value* with every leaf replaced by a value of another JSON type; objects and
    arrays keep their keys and length, so only type checks can catch the damage."""
    if isinstance(value, dict):
        return {key: swap_types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [swap_types(item) for item in value] or {"unexpected": True}
    if isinstance(value, bool):
        return "true"
    if isinstance(value, str):
        return 12345
    if isinstance(value, int | float):
        return "not a number"
    return []

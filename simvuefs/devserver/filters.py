"""Translate the run filters and sort orders of ``GET /api/runs`` into SQL.

Filters are the strings the official client sends (protocol section 3.4), e.g.
``name == my run``, ``has tag.cfd``, ``metadata.alpha >= 2``. Each becomes one SQL condition
with bound parameters; the conditions are ANDed. A filter this server does not understand
raises :class:`QueryError` rather than being ignored, so a client never silently receives
every run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_COMPARISON = re.compile(r"^(?P<field>\S+) (?P<op>==|!=|>=|<=|>|<|contains) (?P<value>.*)$", re.S)
_TAG = re.compile(r"^has (?P<not>not )?tag\.(?P<tag>.+)$", re.S)
_EXISTS = re.compile(r"^metadata\.(?P<key>\S+) (?P<not>not )?exists$", re.S)

# Columns (or JSON paths into the run document) that text filters can address.
_TEXT_FIELDS = {
    "name": "runs.name",
    "folder.path": "runs.folder",
    "status": "runs.status",
    "user": "json_extract(runs.doc, '$.user')",
    "description": "json_extract(runs.doc, '$.description')",
    "system.hostname": "json_extract(runs.doc, '$.system.hostname')",
    "system.cwd": "json_extract(runs.doc, '$.system.cwd')",
}

SORT_COLUMNS = {
    "name": "runs.name",
    "created": "runs.created",
    "started": "json_extract(runs.doc, '$.started')",
    "endtime": "json_extract(runs.doc, '$.endtime')",
    "modified": "runs.modified",
    "status": "runs.status",
}


class QueryError(ValueError):
    """A filter or sort order the server does not support; the message names it."""


def _json_path(key: str) -> str:
    """Return a quoted SQLite JSON path for the metadata key *key*."""
    return '$.metadata."' + key.replace('"', '""') + '"'


def _metadata_condition(key: str, op: str, value: str) -> tuple[str, list[object]]:
    extracted = "json_extract(runs.doc, ?)"
    if op in ("==", "!="):
        sql_op = "=" if op == "==" else "IS NOT"
        return f"CAST({extracted} AS TEXT) {sql_op} ?", [_json_path(key), value]
    if op == "contains":
        return f"instr(CAST({extracted} AS TEXT), ?) > 0", [_json_path(key), value]
    try:
        number = float(value)
    except ValueError:
        raise QueryError(f"metadata filter needs a number after {op!r}: {value!r}") from None
    return f"CAST({extracted} AS REAL) {op} ?", [_json_path(key), number]


def _condition(text: str, user: str) -> tuple[str, list[object]]:
    if text == "starred":
        return "json_extract(runs.doc, '$.starred') = 1", []
    if match := _TAG.match(text):
        exists = "EXISTS (SELECT 1 FROM json_each(runs.doc, '$.tags') WHERE value = ?)"
        return (f"NOT {exists}" if match["not"] else exists), [match["tag"]]
    if match := _EXISTS.match(text):
        test = "json_type(runs.doc, ?) IS " + ("NULL" if match["not"] else "NOT NULL")
        return test, [_json_path(match["key"])]
    match = _COMPARISON.match(text)
    if match is None:
        raise QueryError(f"unsupported filter: {text!r}")
    field, op, value = match["field"], match["op"], match["value"]
    if field == "artifact.id" and op == "==":
        return (
            "runs.id IN (SELECT run_id FROM run_artifacts WHERE artifact_id = ?)",
            [value],
        )
    if field.startswith("metadata.") and len(field) > len("metadata."):
        return _metadata_condition(field.removeprefix("metadata."), op, value)
    column = _TEXT_FIELDS.get(field)
    if column is None or op not in ("==", "!=", "contains"):
        raise QueryError(f"unsupported filter: {text!r}")
    if field == "user" and value == "self":
        value = user
    if op == "contains":
        return f"instr({column}, ?) > 0", [value]
    return f"{column} {'=' if op == '==' else 'IS NOT'} ?", [value]


def compile_filters(filters: Sequence[str], user: str) -> tuple[str, list[object]]:
    """Return an SQL condition (``1`` when there are no filters) and its parameters.

    *user* is the name ``user == self`` refers to.
    """
    conditions: list[str] = []
    params: list[object] = []
    for text in filters:
        if not isinstance(text, str):
            raise QueryError(f"filters must be strings, got {text!r}")
        sql, values = _condition(text.strip(), user)
        conditions.append(f"({sql})")
        params.extend(values)
    return (" AND ".join(conditions) or "1"), params


def compile_sorting(sorting: Sequence[object], columns: dict[str, str]) -> str:
    """Return an SQL ORDER BY list for *sorting* (``[{"id": column, "desc": bool}, ...]``)."""
    terms: list[str] = []
    for item in sorting:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise QueryError(f'sorting entries must be {{"id": column, "desc": bool}}: {item!r}')
        column = columns.get(item["id"])
        if column is None:
            raise QueryError(f"cannot sort by {item['id']!r} (known: {', '.join(columns)})")
        terms.append(f"{column} {'DESC' if item.get('desc') else 'ASC'}")
    return ", ".join(terms)

"""Typed records for what the Simvue server returns.

Pure data: no I/O. Every ``from_json`` is lenient: unknown keys are ignored, missing optional
keys get defaults, and a record that lacks what simvuefs cannot do without (an ``id``, a
``name``) raises :class:`simvuefs.errors.ProtocolError` instead of ``KeyError``/``TypeError``,
so bad server data never escapes as an unexpected exception.

The artifact-name rule lives here and nowhere else: :func:`is_artifact_name` decides, and
:func:`check_artifact_name` refuses with the one message users see (:data:`ARTIFACT_NAME_RULE`).
"""

from __future__ import annotations

import dataclasses
import errno
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from simvuefs.errors import LocalError, ProtocolError

CATEGORIES = ("input", "output", "code")
"""Artifact categories, in the order directories are shown."""

NAME_REGEX = re.compile(r"^[a-zA-Z0-9\-\_\s\/\.:]+$")
"""What the Simvue client accepts for run and artifact names (protocol section 3.2)."""
ARTIFACT_NAME_RULE = (
    "Simvue artifact names may contain only ASCII letters, digits, spaces and - _ . : "
    f"with / between directories (regex {NAME_REGEX.pattern} on the whole name; no tabs "
    "or newlines, no empty, . or .. parts)"
)
"""The rule of :func:`is_artifact_name` as users read it (SEMANTICS.md, "Writing")."""

# The server's timestamp format is "%Y-%m-%dT%H:%M:%S.%f", UTC, naive. We also accept
# missing fractions, a trailing "Z" and explicit offsets, because other servers may send them.
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def parse_timestamp(value: object) -> datetime | None:
    """Return *value* as an aware UTC datetime, or None if it is absent or unparseable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(when: datetime) -> str:
    """Format *when* the way the Simvue server and client expect (UTC, naive, microseconds)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.strftime(_TS_FORMAT)


def is_artifact_name(name: str) -> bool:
    """True for an artifact name simvuefs uploads (:data:`ARTIFACT_NAME_RULE`): the client's
    NAME_REGEX, no whitespace but spaces, and ``/``-separated parts that are neither empty
    nor ``.``/``..``."""
    if NAME_REGEX.fullmatch(name) is None or any(c.isspace() and c != " " for c in name):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def check_artifact_name(name: str) -> None:
    """Raise LocalError (EINVAL) naming the rule unless *name* passes :func:`is_artifact_name`."""
    if not is_artifact_name(name):
        raise LocalError(f"refusing the name {name!r}: {ARTIFACT_NAME_RULE}", errno=errno.EINVAL)


NO_METADATA: Mapping[str, Any] = MappingProxyType({})
"""The metadata of every artifact that has none: one shared (read-only) mapping, not an
empty dict per artifact listed."""


def _no_metadata() -> Mapping[str, Any]:
    return NO_METADATA


def _require_str(data: dict[str, Any], key: str, kind: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        # Name the keys only: values may be signed URLs, whose query strings are secrets.
        keys = ", ".join(sorted(str(k) for k in data))[:200]
        raise ProtocolError(f"{kind} record without a usable {key!r} (keys: {keys})")
    return value


def _opt_str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return value if isinstance(value, str) else default


def _as_dict(data: object, kind: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object for a {kind}, got {type(data).__name__}")
    return data


@dataclass(frozen=True, slots=True)
class Run:
    """A Simvue run as listed by ``GET /api/runs`` or ``GET /api/runs/{id}``."""

    id: str
    name: str
    folder: str = "/"
    status: str = "unknown"
    created: datetime | None = None
    started: datetime | None = None
    endtime: datetime | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    user: str = ""
    """The run's owner as the server names users (``GET /api/whoami``'s ``user``); "" when
    the record does not say (the offline cache's runs)."""

    @property
    def is_finished(self) -> bool:
        """True when the run can no longer change status (its artifacts may still grow)."""
        return self.status in ("completed", "failed", "terminated", "lost")

    def belongs_to_another(self, user: str | None) -> bool:
        """True when the run is known to belong to someone other than *user*: another
        user's run shared with them. False when either name is unknown (None or ""): the
        server then decides what the user may change."""
        return bool(user) and bool(self.user) and self.user != user

    @classmethod
    def from_json(cls, data: object, run_id: str | None = None) -> Run:
        """Build a Run from a server record; *run_id* fills in a missing ``id``."""
        record = _as_dict(data, "run")
        if run_id is not None and "id" not in record:
            record = {**record, "id": run_id}
        folder = record.get("folder")
        if isinstance(folder, dict):  # some servers nest the folder object
            folder = folder.get("path")
        tags = record.get("tags")
        metadata = record.get("metadata")
        return cls(
            id=_require_str(record, "id", "run"),
            name=_require_str(record, "name", "run"),
            folder=folder if isinstance(folder, str) and folder else "/",
            status=_opt_str(record, "status", "unknown"),
            created=parse_timestamp(record.get("created")),
            started=parse_timestamp(record.get("started")),
            endtime=parse_timestamp(record.get("endtime")),
            description=_opt_str(record, "description"),
            tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
            metadata=metadata if isinstance(metadata, dict) else {},
            user=_opt_str(record, "user"),
        )


@dataclass(frozen=True, slots=True)
class Artifact:
    """An artifact as listed by ``GET /api/runs/{id}/artifacts`` or ``GET /api/artifacts/{id}``.

    ``size`` is what the server reports. For object artifacts (``original_path == ""``) the
    official client stores ``len(content) + 33``, so ``size`` is not the content length.
    """

    id: str
    name: str
    size: int = 0
    checksum: str = ""
    mime_type: str = "application/octet-stream"
    original_path: str = ""
    url: str | None = None
    uploaded: bool = True
    created: datetime | None = None
    category: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=_no_metadata, compare=False, hash=False)

    @property
    def is_object(self) -> bool:
        """True for artifacts saved with ``save_object`` (serialised Python objects)."""
        return self.original_path == ""

    def same_but_url(self, other: Artifact) -> bool:
        """True when *other* records this artifact as it is in every field but the download
        ``url`` (which the server signs anew for each listing)."""
        return all(getattr(self, name) == getattr(other, name) for name in _LISTED_FIELDS)

    @classmethod
    def from_json(cls, data: object) -> Artifact:
        """Build an Artifact from a server record."""
        record = _as_dict(data, "artifact")
        size = record.get("size")
        url = record.get("url")
        category = record.get("category")
        metadata = record.get("metadata")
        return cls(
            id=_require_str(record, "id", "artifact"),
            name=_require_str(record, "name", "artifact"),
            size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0,
            checksum=_opt_str(record, "checksum").lower(),
            # Interned: a mount keeps one record per artifact shown, these repeat.
            mime_type=sys.intern(_opt_str(record, "mime_type", "application/octet-stream")),
            original_path=_opt_str(record, "original_path"),
            url=url if isinstance(url, str) and url else None,
            uploaded=bool(record.get("uploaded", True)),
            created=parse_timestamp(record.get("created")),
            category=sys.intern(category) if category in CATEGORIES else None,
            metadata=metadata if isinstance(metadata, dict) and metadata else NO_METADATA,
        )


_LISTED_FIELDS = tuple(f.name for f in dataclasses.fields(Artifact) if f.name != "url")
"""The fields of :class:`Artifact` that :meth:`Artifact.same_but_url` compares."""


@dataclass(frozen=True, slots=True)
class UploadSlot:
    """The answer to ``POST /api/artifacts``: where (and whether) to upload the content.

    ``url`` is None when the server already holds content with this checksum (dedup); then
    the upload and the ``uploaded`` mark are skipped. ``fields`` non-empty means a multipart
    POST (S3 presigned-POST style); empty means a raw PUT.
    """

    artifact_id: str
    url: str | None
    fields: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, data: object) -> UploadSlot:
        """Build an UploadSlot from the create-artifact response."""
        record = _as_dict(data, "artifact slot")
        url = record.get("url")
        fields = record.get("fields")
        pairs: tuple[tuple[str, str], ...] = ()
        if isinstance(fields, dict):
            pairs = tuple((str(k), str(v)) for k, v in fields.items())
        return cls(
            artifact_id=_require_str(record, "id", "artifact slot"),
            url=url if isinstance(url, str) and url else None,
            fields=pairs,
        )

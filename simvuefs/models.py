"""Typed records for what the Simvue server returns.

Pure data: no I/O. Every ``from_json`` is lenient: unknown keys are ignored, missing optional
keys get defaults, and a record that lacks what simvuefs cannot do without (an ``id``, a
``name``) raises :class:`simvuefs.errors.ProtocolError` instead of ``KeyError``/``TypeError``,
so bad server data never escapes as an unexpected exception.

The artifact-name rule lives here and nowhere else: :func:`is_artifact_name` decides, and
:func:`check_artifact_name` refuses with the one message users see (:data:`ARTIFACT_NAME_RULE`).
"""

from __future__ import annotations

import errno
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _pack_checksum(checksum: str) -> str | bytes:
    """A lower-case hex digest as its bytes (32 for SHA-256, not 64 characters); any other
    text as it is (so that the hex of the bytes is always the text given)."""
    try:
        packed = bytes.fromhex(checksum)
    except ValueError:
        return checksum
    return packed if packed and packed.hex() == checksum else checksum


class _Prefixes:
    """Hands out one string object per prefix (interned), without slicing again a prefix
    equal to the last one handed out: the records of a listing share theirs."""

    def __init__(self) -> None:
        self._last = ""

    def share(self, text: str, end: int) -> str:
        """``text[:end]`` as the one object kept for that prefix."""
        last = self._last
        if len(last) == end and text.startswith(last):
            return last
        self._last = sys.intern(text[:end])
        return self._last


_PATH_PREFIXES = _Prefixes()
_URL_HEADS = _Prefixes()


class Artifact:
    """An artifact as listed by ``GET /api/runs/{id}/artifacts`` or ``GET /api/artifacts/{id}``.

    ``size`` is what the server reports. For object artifacts (``original_path == ""``) the
    official client stores ``len(content) + 33``, so ``size`` is not the content length.

    Immutable. Kept compact, because a mount keeps one per artifact listed for as long as
    the listing is used (docs/reliability.md "Memory and files written"): the checksum as
    its bytes when it is a lower-case hex digest, ``created`` as microseconds since the
    epoch, an ``original_path`` that ends with the name as its prefix, and a download
    ``url`` that holds the id as what is around it; the prefixes are interned, so that the
    files of one directory (or storage) share them. The properties give them back as the server
    sent them; equality and hashing are those of the values, ``metadata`` left out.
    """

    __slots__ = (
        "id",
        "name",
        "size",
        "_checksum",
        "mime_type",
        "_path",
        "_path_is_prefix",
        "_url_head",
        "_url_rest",
        "uploaded",
        "_created_us",
        "category",
        "metadata",
    )
    id: str
    name: str
    size: int
    _checksum: str | bytes
    mime_type: str
    _path: str
    _path_is_prefix: bool
    _url_head: str | None
    _url_rest: str | None
    uploaded: bool
    _created_us: int | None
    category: str | None
    metadata: Mapping[str, Any]

    def __init__(
        self,
        id: str,  # noqa: A002 (the server's field name)
        name: str,
        size: int = 0,
        checksum: str = "",
        mime_type: str = "application/octet-stream",
        original_path: str = "",
        url: str | None = None,
        uploaded: bool = True,
        created: datetime | None = None,
        category: str | None = None,
        metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        suffixed = len(original_path) > len(name) and original_path.endswith(name)
        path = (
            _PATH_PREFIXES.share(original_path, len(original_path) - len(name))
            if suffixed
            else original_path
        )
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        created_us = None if created is None else (created - _EPOCH) // _MICROSECOND
        at = -1 if url is None else url.find(id)
        url_head = None if url is None or at < 0 else _URL_HEADS.share(url, at)
        init = object.__setattr__
        init(self, "id", id)
        init(self, "name", name)
        init(self, "size", size)
        init(self, "_checksum", _pack_checksum(checksum))
        init(self, "mime_type", mime_type)
        init(self, "_path", path)
        init(self, "_path_is_prefix", suffixed)
        init(self, "_url_head", url_head)
        init(self, "_url_rest", url if url is None or at < 0 else url[at + len(id) :])
        init(self, "uploaded", uploaded)
        init(self, "_created_us", created_us)
        init(self, "category", category)
        init(self, "metadata", metadata)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Artifact is immutable (use replace); tried to set {name}")

    def __copy__(self) -> Artifact:
        return self  # immutable: a copy is the record itself

    def __deepcopy__(self, memo: dict[int, object]) -> Artifact:
        return self

    @property
    def checksum(self) -> str:
        """The content's checksum as the server sent it (lower case): "" if none."""
        packed = self._checksum
        return packed.hex() if isinstance(packed, bytes) else packed

    @property
    def url(self) -> str | None:
        """Where to download the content (presigned; None when the server gave none)."""
        head = self._url_head
        return self._url_rest if head is None else f"{head}{self.id}{self._url_rest}"

    @property
    def original_path(self) -> str:
        """The path the content was uploaded from; "" for object artifacts."""
        return self._path + self.name if self._path_is_prefix else self._path

    @property
    def created(self) -> datetime | None:
        """When the server recorded the artifact (aware, UTC), or None if it did not say."""
        us = self._created_us
        return None if us is None else _EPOCH + us * _MICROSECOND

    @property
    def is_object(self) -> bool:
        """True for artifacts saved with ``save_object`` (serialised Python objects)."""
        return self._path == ""

    def values_but_url(self) -> tuple[object, ...]:
        """Every stored value but ``url`` and ``metadata``, as equality compares them."""
        return (
            self.id,
            self.name,
            self.size,
            self._checksum,
            self.mime_type,
            self._path,
            self._path_is_prefix,
            self.uploaded,
            self._created_us,
            self.category,
        )

    def same_but_url(self, other: Artifact) -> bool:
        """True when *other* records this artifact as it is in every field but the download
        ``url`` (which the server signs anew for each listing)."""
        return self.values_but_url() == other.values_but_url() and self.metadata == other.metadata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Artifact):
            return NotImplemented
        return self.url == other.url and self.values_but_url() == other.values_but_url()

    def __hash__(self) -> int:
        return hash((self.url, *self.values_but_url()))

    def __repr__(self) -> str:
        return (
            f"Artifact(id={self.id!r}, name={self.name!r}, size={self.size!r}, "
            f"checksum={self.checksum!r}, mime_type={self.mime_type!r}, "
            f"original_path={self.original_path!r}, url={self.url!r}, "
            f"uploaded={self.uploaded!r}, created={self.created!r}, "
            f"category={self.category!r}, metadata={self.metadata!r})"
        )

    def replace(self, **changes: Any) -> Artifact:
        """A copy with the fields named in *changes* (``__init__``'s arguments) changed."""
        fields = {name: getattr(self, name) for name in _INIT_FIELDS}
        return Artifact(**{**fields, **changes})

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


_INIT_FIELDS = (
    "id",
    "name",
    "size",
    "checksum",
    "mime_type",
    "original_path",
    "url",
    "uploaded",
    "created",
    "category",
    "metadata",
)
"""The arguments of ``Artifact.__init__``, which :meth:`Artifact.replace` copies."""


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

"""Fault switches: make the devserver misbehave on purpose, to test clients.

:class:`Faults` is one mutable record of switches (all off by default), changed through
``PUT /admin/faults`` or ``--fault NAME=VALUE``. Routes never read the switches directly:
they call the small hook methods (``refusal`` before routing, in ``gate.py``; ``api_error``,
``storage_error``, ``stall_for``, ``url_lifetime``, ``drop_limit``, ``range_ignored``,
``token_refusal``, ``bad_digest``, ``corruption``, ``listing_stall``, ``malformed_json``,
``chunked_body``, ``page_cap``, ``name_rejected``, ``basic_by_default``; ``wan_delay`` and
``upload_pace`` in ``gate.py``) at
fixed points of a request. A new kind of fault is a new field plus a new hook called from
the one place it applies. Every hook that injects something counts it in
:attr:`Faults.injected` (``GET /admin/stats``).

Counted switches: a request is hit while the matching ``*_count`` is above zero (each hit
uses one), or at random with probability ``*_rate``. Error switches need a status as well:
a status with neither count nor rate fails nothing.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import random
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STALL_PLACES = ("", "api", "storage_before", "storage_middle")
"""Where ``stall_seconds`` applies: before API handlers, before a storage answer's headers,
or in the middle of a storage GET body ("" = nowhere)."""

MALFORMED_KINDS = ("", "truncated", "not_json", "wrong_types")
"""What ``malformed_json`` does to an API answer: cut it in half ("" is the same as
"truncated"), replace it with an HTML page, or keep its shape with every value swapped for
one of another JSON type (strings become numbers, numbers strings, lists objects...)."""

LISTING_ROUTES = frozenset(
    {
        "GET /api/runs",
        "GET /api/runs/{run_id}/artifacts",
        "GET /api/artifacts",
        "GET /api/folders",
    }
)
"""The routes ``listing_delay`` slows down."""


REFUSAL_PLACES = ("", "api", "storage")
"""Which requests ``rate_limit_*`` refuses: API and storage (""), or only one of them."""


class FaultError(ValueError):
    """An unknown switch or a value of the wrong type; the message says which."""


@dataclass(frozen=True)
class Refusal:
    """An answer that turns a request away before any route sees it (``gate.py``).

    *code* is the S3 error code of a storage answer, *message* the text of either kind;
    *headers* go with the answer (``Retry-After``).
    """

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Faults:
    """The fault switches. Field names are the names used by the admin API and ``--fault``."""

    api_error_status: int = 0
    api_error_rate: float = 0.0
    api_error_count: int = 0
    # When set, the API error switches apply only to this route, e.g.
    # "PUT /api/runs/{run_id}/artifacts/{artifact_id}" (the attach); "" = every route.
    api_error_route: str = ""
    storage_error_status: int = 0
    storage_error_rate: float = 0.0
    storage_error_count: int = 0
    # Storage GETs answer 200 with the whole body, as if Range were not supported.
    ignore_range: bool = False
    stall_seconds: float = 0.0
    stall_where: str = ""
    # Lifetime (seconds) of storage URLs minted from now on; 0 = the server's --url-expiry.
    # A negative value mints URLs that are already expired.
    url_expiry: float = 0.0
    # Storage GETs close the connection after this many body bytes; 0 = never.
    drop_after_bytes: int = 0
    # API tokens older than this many seconds (from their "iat") get 401; 0 = never.
    token_expiry: float = 0.0
    # API tokens issued before this time (epoch seconds) get 401 (revoked); 0 = none.
    # POST /admin/tokens {"revoke_others": true} sets it to the new token's issue time.
    token_not_before: float = 0.0
    # The next N uploads are refused with S3's BadDigest, whatever their content.
    bad_digest_count: int = 0
    # Storage GET bodies carry the content byte at corrupt_offset inverted (XOR 0xFF).
    corrupt_content: bool = False
    corrupt_offset: int = 0
    # Every listing (LISTING_ROUTES) waits this long before answering.
    listing_delay: float = 0.0
    # GET /api/runs lists this many synthetic runs after the real ones (see synthetic.py).
    extra_runs: int = 0
    # Every run's artifact listing holds this many synthetic empty artifacts ("output").
    extra_artifacts: int = 0
    # Storage GETs ignore Range and send the whole body chunked, without Content-Length.
    chunked_no_length: bool = False
    # Pages of GET /api/runs and GET /api/artifacts hold at most this many entries, whatever
    # `count` asks (0 = the usual cap of 100).
    page_size: int = 0
    # Successful API answers are mangled (MALFORMED_KINDS) while the count lasts, or at
    # random with the rate; malformed_json_route limits them to one route ("" = every route).
    malformed_json_count: int = 0
    malformed_json_rate: float = 0.0
    malformed_json_route: str = ""
    malformed_json_kind: str = ""
    # GET /api/runs entries hold only ``id`` and what the return_* flags ask for: the basic
    # fields (name, folder, status, ...) only with return_basic=true, in either mode (issue
    # 15's stricter reading of the Simvue docs; --realistic keeps them unless
    # return_basic=false).
    basic_only_when_asked: bool = False
    # POST /api/artifacts refuses names this regular expression matches (re.search) with 422
    # on body.name, as a server validating names would; "" = none.
    reject_artifact_names: str = ""
    # For this many seconds from when it is set, every API and storage request answers 503
    # (a server restarting behind its proxy); 0 = no outage.
    unavailable_seconds: float = 0.0
    # 429 Too Many Requests for the next N requests (or at random with the rate) to
    # rate_limit_where (REFUSAL_PLACES), with "Retry-After: <rate_limit_retry_after>"
    # (0 = no header), sent as an HTTP date (rounded up to a whole second) with
    # rate_limit_date.
    rate_limit_count: int = 0
    rate_limit_rate: float = 0.0
    rate_limit_where: str = ""
    rate_limit_retry_after: float = 0.0
    rate_limit_date: bool = False
    # A wide-area network in front of the server (the benchmark's field profile): every API
    # and storage request waits this many seconds (one round trip) before it is handled,
    # and storage uploads are received at most upload_bandwidth bytes per second each (0 = no
    # cap). Both are applied before routing (gate.py), after the refusals.
    request_delay: float = 0.0
    upload_bandwidth: int = 0
    # time.monotonic() at which the outage of unavailable_seconds ends (not a switch).
    unavailable_until: float = field(default=0.0, repr=False, compare=False)
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)
    injected: Counter[str] = field(default_factory=Counter, repr=False, compare=False)

    # -- administration --------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """Return the switches as JSON-ready data."""
        return {name: getattr(self, name) for name in switch_names()}

    def update(self, changes: Mapping[str, object]) -> None:
        """Set the switches in *changes*; all or none are applied (FaultError otherwise)."""
        validated = {name: _coerce(name, value) for name, value in changes.items()}
        for name, value in validated.items():
            setattr(self, name, value)
        if "unavailable_seconds" in validated:
            self.unavailable_until = time.monotonic() + self.unavailable_seconds

    def clear(self) -> None:
        """Turn every switch off."""
        self.update({f.name: f.default for f in _switch_fields()})

    # -- hooks called by the routes ----------------------------------------------------------

    def refusal(self, where: str) -> Refusal | None:
        """Return the answer that turns away a request to *where* (``"api"`` or
        ``"storage"``) now: an outage's 503 or a 429, or None to let it through."""
        if time.monotonic() < self.unavailable_until:
            self.injected["unavailable"] += 1
            return Refusal(503, "ServiceUnavailable", "Service unavailable (injected outage)")
        if self.rate_limit_where not in ("", where) or not self._take("rate_limit"):
            return None
        headers = {}
        if self.rate_limit_retry_after > 0:
            headers["Retry-After"] = self._retry_after_value()
        return Refusal(429, "TooManyRequests", "Too many requests (injected)", headers)

    def wan_delay(self) -> float:
        """Return how long an API or storage request waits before it is handled, or 0."""
        if self.request_delay > 0:
            self.injected["request_delay"] += 1
        return self.request_delay

    def upload_pace(self) -> int:
        """Return the most bytes per second a storage upload's body is received at (0: no
        cap)."""
        if self.upload_bandwidth > 0:
            self.injected["upload_bandwidth"] += 1
        return self.upload_bandwidth

    def _retry_after_value(self) -> str:
        if self.rate_limit_date:
            return email.utils.formatdate(
                math.ceil(time.time() + self.rate_limit_retry_after), usegmt=True
            )
        return f"{self.rate_limit_retry_after:g}"

    def api_error(self, route: str) -> int:
        """Return the status a request to *route* ("METHOD /api/path/{param}") must fail
        with now, or 0 to proceed."""
        if self.api_error_route and route != self.api_error_route:
            return 0
        return self._take_error("api_error")

    def storage_error(self) -> int:
        """Return the status a storage request (download or upload) must fail with, or 0."""
        return self._take_error("storage_error")

    def stall_for(self, where: str) -> float:
        """Return how long to stall at *where* (one of STALL_PLACES), or 0."""
        if self.stall_where == where and where and self.stall_seconds > 0:
            self.injected["stall"] += 1
            return self.stall_seconds
        return 0.0

    def url_lifetime(self, default: float) -> float:
        """Return the lifetime of a storage URL minted now."""
        return self.url_expiry if self.url_expiry else default

    def drop_limit(self) -> int | None:
        """Return after how many body bytes a storage GET drops its connection, or None."""
        return self.drop_after_bytes if self.drop_after_bytes > 0 else None

    def range_ignored(self) -> bool:
        """True when storage must answer Range requests with 200 and the whole body."""
        return self.ignore_range

    def chunked_body(self) -> bool:
        """True when a storage GET must answer 200 with the whole body, chunked, without
        Content-Length (Range ignored)."""
        if self.chunked_no_length:
            self.injected["chunked_no_length"] += 1
        return self.chunked_no_length

    def page_cap(self, asked: int) -> int:
        """Return how many entries a listing page (LISTING_ROUTES) holds when *asked* for
        that many."""
        if 0 < self.page_size < asked:
            self.injected["page_size"] += 1
            return self.page_size
        return asked

    def basic_by_default(self) -> bool:
        """True when ``GET /api/runs`` sends the basic fields without ``return_basic``."""
        return not self.basic_only_when_asked

    def token_refusal(self, claims: Mapping[str, Any], now: float | None = None) -> str | None:
        """Return why an API request with a valid token of *claims* must get 401, or None."""
        issued = claims.get("iat")
        if not isinstance(issued, int | float) or isinstance(issued, bool):
            issued = 0.0
        now = time.time() if now is None else now
        if self.token_not_before and issued < self.token_not_before:
            self.injected["token_revoked"] += 1
            return "token has been revoked"
        if self.token_expiry and now - issued > self.token_expiry:
            self.injected["token_expiry"] += 1
            return "token has expired"
        return None

    def name_rejected(self, name: str) -> bool:
        """True when ``POST /api/artifacts`` must refuse the artifact name *name*."""
        if self.reject_artifact_names and re.search(self.reject_artifact_names, name):
            self.injected["reject_artifact_names"] += 1
            return True
        return False

    def bad_digest(self) -> bool:
        """True when this upload must be refused with BadDigest whatever its content."""
        if self.bad_digest_count <= 0:
            return False
        self.bad_digest_count -= 1
        self.injected["bad_digest"] += 1
        return True

    def corruption(self, start: int, length: int) -> int | None:
        """Return the index, within a body of *length* content bytes from *start*, of the
        byte to invert, or None."""
        if self.corrupt_content and start <= self.corrupt_offset < start + length:
            self.injected["corrupt_content"] += 1
            return self.corrupt_offset - start
        return None

    def listing_stall(self, route: str) -> float:
        """Return how long a request to *route* must wait before answering, or 0."""
        if self.listing_delay > 0 and route in LISTING_ROUTES:
            self.injected["listing_delay"] += 1
            return self.listing_delay
        return 0.0

    def malformed_json(self, route: str) -> str | None:
        """Return how to mangle this successful answer to *route* (a MALFORMED_KINDS value,
        "" meaning truncated), or None to send it as it is."""
        if self.malformed_json_route and route != self.malformed_json_route:
            return None
        if not self._take("malformed_json"):
            return None
        return self.malformed_json_kind or "truncated"

    def _take(self, prefix: str) -> bool:
        """Use one of ``<prefix>_count``, or draw against ``<prefix>_rate``; count a hit."""
        remaining: int = getattr(self, f"{prefix}_count")
        rate: float = getattr(self, f"{prefix}_rate")
        if remaining > 0:
            setattr(self, f"{prefix}_count", remaining - 1)
        elif not (rate > 0 and self.rng.random() < rate):
            return False
        self.injected[prefix] += 1
        return True

    def _take_error(self, prefix: str) -> int:
        status: int = getattr(self, f"{prefix}_status")
        return status if status and self._take(prefix) else 0


def _switch_fields() -> list[dataclasses.Field[Any]]:
    internal = ("rng", "injected", "unavailable_until")
    return [f for f in dataclasses.fields(Faults) if f.name not in internal]


def switch_names() -> list[str]:
    """Return the names of all fault switches."""
    return [f.name for f in _switch_fields()]


_TYPES: dict[str, type] = {f.name: type(f.default) for f in _switch_fields()}
# Everything numeric but url_expiry, whose negative values mint expired URLs.
_NON_NEGATIVE = frozenset(
    name for name, kind in _TYPES.items() if kind in (int, float) and name != "url_expiry"
)


def _coerce(name: str, value: object) -> object:
    kind = _TYPES.get(name)
    if kind is None:
        raise FaultError(f"unknown fault switch {name!r} (known: {', '.join(_TYPES)})")
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value  # type: ignore[arg-type]
    else:
        ok = isinstance(value, str)
    if not ok:
        raise FaultError(f"fault switch {name!r} needs a {kind.__name__}, got {value!r}")
    if name == "stall_where" and value not in STALL_PLACES:
        raise FaultError(f"stall_where must be one of {', '.join(STALL_PLACES[1:])}")
    if name == "malformed_json_kind" and value not in MALFORMED_KINDS:
        raise FaultError(f"malformed_json_kind must be one of {', '.join(MALFORMED_KINDS[1:])}")
    if name == "reject_artifact_names":
        try:
            re.compile(value)  # type: ignore[call-overload]
        except re.error as exc:
            raise FaultError(f"reject_artifact_names is not a regular expression: {exc}") from None
    if name == "rate_limit_where" and value not in REFUSAL_PLACES:
        raise FaultError(f"rate_limit_where must be one of {', '.join(REFUSAL_PLACES[1:])}")
    if name.endswith("_rate") and not 0.0 <= value <= 1.0:  # type: ignore[operator]
        raise FaultError(f"fault switch {name!r} must be between 0 and 1")
    if name in _NON_NEGATIVE and value < 0:  # type: ignore[operator]
        raise FaultError(f"fault switch {name!r} must not be negative")
    return value


def parse_assignment(text: str) -> tuple[str, object]:
    """Parse ``NAME=VALUE`` from the command line into a switch name and a typed value."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    kind = _TYPES.get(name)
    if not sep or kind is None:
        raise FaultError(f"--fault expects NAME=VALUE with NAME one of: {', '.join(_TYPES)}")
    raw = raw.strip()
    value: object
    try:
        if kind is bool:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            value = raw.lower() in ("1", "true", "yes", "on")
        elif kind is int:
            value = int(raw)
        elif kind is float:
            value = float(raw)
        else:
            value = raw
    except ValueError:
        raise FaultError(f"--fault {name}: {raw!r} is not a {kind.__name__}") from None
    return name, _coerce(name, value)

"""Fault switches: make the devserver misbehave on purpose, to test clients.

:class:`Faults` is one mutable record of switches (all off by default), changed through
``PUT /admin/faults`` or ``--fault NAME=VALUE``. Routes never read the switches directly:
they call the small hook methods (``api_error``, ``storage_error``, ``stall_for``,
``url_lifetime``, ``drop_limit``, ``range_ignored``) at fixed points of a request. A new kind
of fault is a new field plus a new hook called from the one place it applies.

Error switches: a request fails with *status* while the matching ``*_error_count`` is above
zero (each failure uses one), or at random with probability ``*_error_rate``. A status with
neither count nor rate fails nothing.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STALL_PLACES = ("", "api", "storage_before", "storage_middle")
"""Where ``stall_seconds`` applies: before API handlers, before a storage answer's headers,
or in the middle of a storage GET body ("" = nowhere)."""


class FaultError(ValueError):
    """An unknown switch or a value of the wrong type; the message says which."""


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
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    # -- administration --------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """Return the switches as JSON-ready data."""
        return {name: getattr(self, name) for name in switch_names()}

    def update(self, changes: Mapping[str, object]) -> None:
        """Set the switches in *changes*; all or none are applied (FaultError otherwise)."""
        validated = {name: _coerce(name, value) for name, value in changes.items()}
        for name, value in validated.items():
            setattr(self, name, value)

    def clear(self) -> None:
        """Turn every switch off."""
        self.update({f.name: f.default for f in _switch_fields()})

    # -- hooks called by the routes ----------------------------------------------------------

    def api_error(self, route: str) -> int:
        """Return the status a request to *route* ("METHOD /api/path/{param}") must fail
        with now, or 0 to proceed."""
        if self.api_error_route and route != self.api_error_route:
            return 0
        return self._take("api_error")

    def storage_error(self) -> int:
        """Return the status a storage request (download or upload) must fail with, or 0."""
        return self._take("storage_error")

    def stall_for(self, where: str) -> float:
        """Return how long to stall at *where* (one of STALL_PLACES), or 0."""
        return self.stall_seconds if self.stall_where == where and where else 0.0

    def url_lifetime(self, default: float) -> float:
        """Return the lifetime of a storage URL minted now."""
        return self.url_expiry if self.url_expiry else default

    def drop_limit(self) -> int | None:
        """Return after how many body bytes a storage GET drops its connection, or None."""
        return self.drop_after_bytes if self.drop_after_bytes > 0 else None

    def range_ignored(self) -> bool:
        """True when storage must answer Range requests with 200 and the whole body."""
        return self.ignore_range

    def _take(self, prefix: str) -> int:
        status: int = getattr(self, f"{prefix}_status")
        remaining: int = getattr(self, f"{prefix}_count")
        rate: float = getattr(self, f"{prefix}_rate")
        if not status:
            return 0
        if remaining > 0:
            setattr(self, f"{prefix}_count", remaining - 1)
            return status
        return status if rate > 0 and self.rng.random() < rate else 0


def _switch_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Faults) if f.name != "rng"]


def switch_names() -> list[str]:
    """Return the names of all fault switches."""
    return [f.name for f in _switch_fields()]


_TYPES: dict[str, type] = {f.name: type(f.default) for f in _switch_fields()}


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
    if name.endswith("_rate") and not 0.0 <= value <= 1.0:  # type: ignore[operator]
        raise FaultError(f"fault switch {name!r} must be between 0 and 1")
    if name.endswith(("_count", "_seconds", "_bytes")) and value < 0:  # type: ignore[operator]
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

"""Settings: where the server is, how to authenticate, and the tunables of a mount.

Server URL and token are resolved as the official ``simvue`` 2.6.2 client resolves them
(protocol sections 1.1-1.5, ``simvue/config/user.py:SimvueConfiguration.fetch``):

- each of URL and token is taken, independently, from the environment (``SIMVUE_URL``,
  ``SIMVUE_TOKEN``), else from the command line (``--url``, ``--token``, the client's explicit
  arguments), else from the config file's ``[server]`` table, or ``[profiles.<name>]`` when a
  profile is selected by ``SIMVUE_SERVER_PROFILE`` (which beats ``--profile``);
- the config file is the first ``simvue.toml`` found from the working directory up to ``/``,
  else the first ``.simvue.toml``, else ``~/simvue.toml``, else ``~/.simvue.toml``; ``--config``
  replaces that search. Legacy INI files without a TOML file are an error, as in the client;
- ``/api`` is appended to the URL unless it already ends with ``/api``.

Deliberate differences from the client, all for URLs or paths the client would mangle:
trailing slashes are dropped before ``/api`` is appended (the client turns ``http://h/api/``
into ``http://h/api/api``); URLs with credentials, a query or a fragment are refused (the
client silently drops or garbles them); a ``~`` in the offline directory is expanded; only the
``[server]``, ``[profiles]`` and ``[offline]`` tables are read (the client also rejects unknown
keys elsewhere, and merges ``pyproject.toml`` ``[tool.simvue]``, which cannot hold a URL or token).

The token never appears in ``repr``, logs or error messages.

Certificates (:class:`Certificates`) are resolved as the client resolves them
(``config/parameters.py:CertificateSpecifications``), from the same table as URL and token:
``[server.certificates]`` or ``[profiles.<name>.certificates]``, each key overridden by its
environment variable:

- ``server_ca_cert`` / ``SIMVUE_SERVER_CA_CERTIFICATE`` (the API) and ``storage_ca_cert`` /
  ``SIMVUE_STORAGE_CA_CERTIFICATE`` (storage URLs): an existing file (then only its CA
  certificates are trusted), else true/false in pydantic's words (``false``, ``no``, ``0``,
  ...: no verification); anything else is an error. True, the default, means the CA
  certificates of every one of ``REQUESTS_CA_BUNDLE`` and ``CURL_CA_BUNDLE`` (what the
  client's ``requests`` reads: it takes the first), ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``
  (what httpx and OpenSSL read) that is set (a file or a hashed directory), else certifi's
  bundle: whatever the client trusts, simvuefs trusts;
- ``client_cert`` / ``SIMVUE_SERVER_CLIENT_CERTIFICATE``: a PEM file presented to servers
  that ask for a client certificate (mutual TLS), with its key unless ``client_key`` names
  the key's file. The client parses both and uses neither: this meaning is simvuefs's.

Unknown keys in the certificates table are an error (as in the client); relative paths are
taken from the working directory (as in the client) and a leading ``~`` is expanded.

The spool directory of a mount (where files written through it wait until they land) is
decided here and nowhere else: ``--spool-dir`` if given; else, for a server,
``$XDG_CACHE_HOME/simvuefs/spool/<key>`` with *key* derived from the server URL and the
mount point (:func:`mount_spool_dir`: two mounts never share a spool, whose lock would
refuse the second; uploads pending for one server are never offered to another; mounting
the same server at the same place again resumes them); for the offline cache,
``<cache>/simvuefs/spool``. ``Settings.spool_dir`` always holds the result, so nothing below
falls back to a default of its own.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import os
import re
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simvuefs.errors import ConfigError

MIB = 1024 * 1024

# The memory caps of a mount, the one place their defaults are set (sized for a laptop: the
# daemon stays below the cache + the read-ahead total + ~100 MiB of interpreter; one
# streaming job or one random-reading job fills only one of the two: SEMANTICS "Memory").
# A window of 96 MiB holds 24 parts of 4 MiB (--read-streams) in flight for one reader;
# 16 readers share it (6 MiB each: 1-2 parts) within the RSS contract of 250 MiB.
DEFAULT_BLOCK_SIZE = 1 * MIB
DEFAULT_CACHE_BYTES = 128 * MIB
DEFAULT_READAHEAD_PER_FILE = 96 * MIB
DEFAULT_READAHEAD_TOTAL = 96 * MIB
DEFAULT_CONTENT_CACHE_SIZE = 10 * 1024 * MIB
"""The content cache on disk (``--cache-dir``) when no ``--cache-dir-size`` is given."""
MIN_CONTENT_CACHE_SIZE = 16 * MIB
"""The smallest ``--cache-dir-size`` (a few cells of the cache's grid)."""
# Read-ahead fetches parts of this size, up to this many at once per file (read/readahead.py).
DEFAULT_READ_PART_SIZE = 4 * MIB  # one cell of the content cache (diskcache/store.py CELL)
DEFAULT_READ_STREAMS = 24
MAX_READ_STREAMS = 64
DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds one filesystem operation may wait for the server (``--request-timeout``)."""
DEFAULT_UPLOAD_WAIT = 30.0
"""Seconds unmount waits for uploads in progress (``--upload-wait``)."""

CONFIG_FILE_NAMES = ("simvue.toml", ".simvue.toml")
_DEFAULT_PORTS = {"http": 80, "https": 443}
KEY_LENGTH = 16
"""Hex digits of the sha256 that name a per-mount spool or file (collisions are irrelevant)."""


def path_key(*parts: str) -> str:
    """Return the name of a per-mount directory or file derived from *parts*."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:KEY_LENGTH]


def spool_root() -> Path:
    """Return ``$XDG_CACHE_HOME/simvuefs/spool``, or ``~/.cache/simvuefs/spool``."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "simvuefs" / "spool"


def mount_spool_dir(url: str, mountpoint: Path) -> Path:
    """Return the spool of a mount of the server *url* at *mountpoint* (module docstring)."""
    return spool_root() / path_key(url, str(mountpoint))


@dataclass(frozen=True)
class Trust:
    """Which TLS certificates one kind of host may present: the client's ``server_ca_cert``
    (*role* ``server``: the API) or ``storage_ca_cert`` (``storage``: storage URLs).

    *verify* False: none is checked. Otherwise only the CA certificates of *cafiles* (PEM
    bundles) and *capaths* (OpenSSL hashed directories) are trusted, or certifi's bundle when
    both are empty. *source* says where they came from, for messages ("" for certifi).
    """

    role: str = "server"
    verify: bool = True
    cafiles: tuple[Path, ...] = ()
    capaths: tuple[Path, ...] = ()
    source: str = ""

    @property
    def locations(self) -> tuple[Path, ...]:
        """The files and directories of the trusted CA certificates (empty: certifi's)."""
        return self.cafiles + self.capaths

    @property
    def setting(self) -> str:
        """What a user sets to trust a private CA, for messages."""
        return (
            f"SIMVUE_{self.role.upper()}_CA_CERTIFICATE (or {self.role}_ca_cert in "
            "[server.certificates] of simvue.toml)"
        )


@dataclass(frozen=True)
class Certificates:
    """The TLS settings of a server (module docstring): *server* for the API, *storage* for
    storage URLs, and the client certificate (*client_cert*, its key in *client_key* or in
    the same file) for servers that ask for one."""

    server: Trust = Trust("server")
    storage: Trust = Trust("storage")
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    """The resolved server: API base URL, a valid unexpired token, and where each came from.

    *url_source* / *token_source* name the origin for messages, e.g. ``environment variable
    SIMVUE_URL``, ``option --token`` or ``/home/me/simvue.toml [profiles.dev]``.
    *config_file* is the file that was read, if any.
    """

    url: str
    token: str = field(repr=False)
    url_source: str
    token_source: str
    offline_directory: Path
    config_file: Path | None
    certificates: Certificates = Certificates()


@dataclass(frozen=True)
class Settings:
    """Everything a mount, the client and the tools need; immutable once built.

    *url* is the API base, ending in ``/api`` (e.g. ``http://127.0.0.1:8765/api``).
    Construction checks that every tunable is in range (ConfigError otherwise).
    """

    url: str
    token: str = field(repr=False)
    # Deadline for one filesystem-level operation (a lookup, a read, a close): no FUSE request
    # waits on the network longer than this, retries included.
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    connect_timeout: float = 5.0
    # Longest silence tolerated while receiving a response body (a stalled server).
    read_timeout: float = 10.0
    # Requests per call for 429/502/503/504 and connection errors, within request_timeout:
    # waits of 0.25 s doubling to 4 s (times [0.5, 1)) add up to 8-16 s, so a server that
    # restarts in a few seconds is waited for (backends/transport.py, "Retries").
    retry_attempts: int = 8
    # How long listings and attributes are trusted (seconds; float("inf") = indefinite).
    metadata_ttl: float = 1.0
    # How long listings of finished runs are trusted.
    finished_run_ttl: float = 60.0
    # Memory caps (see memory_caps and SEMANTICS.md "Memory"): the block cache, and read-ahead
    # per open file and over all open files.
    block_size: int = DEFAULT_BLOCK_SIZE
    cache_bytes: int = DEFAULT_CACHE_BYTES
    readahead_per_file: int = DEFAULT_READAHEAD_PER_FILE
    readahead_total: int = DEFAULT_READAHEAD_TOTAL
    # Read-ahead parts: bytes per ranged GET, and how many one file may have in flight.
    read_part_size: int = DEFAULT_READ_PART_SIZE
    read_streams: int = DEFAULT_READ_STREAMS
    # TLS: which certificates the API and storage may present, the client certificate.
    certificates: Certificates = Certificates()
    # Check the sha256 of content read in order from start to end (read/verify.py); --no-verify.
    verify_content: bool = True
    # The client's offline cache directory (SIMVUE_OFFLINE_DIRECTORY, [offline] cache, ~/.simvue).
    offline_directory: Path = field(default_factory=lambda: Path.home() / ".simvue")
    # Uploads (write/): where written files are spooled (a mount's own, see from_server and
    # for_offline; settings built directly use spool_root() itself), bytes kept free there,
    # backoff of background retries, and how long unmount waits for them.
    spool_dir: Path = field(default_factory=spool_root)
    spool_min_free: int = 64 * MIB
    upload_retry_initial: float = 2.0
    upload_retry_max: float = 300.0
    shutdown_upload_wait: float = DEFAULT_UPLOAD_WAIT
    # The content cache on disk (diskcache/; SEMANTICS.md "Content cache"): its directory
    # (None: off, the default) and the size eviction keeps it under.
    content_cache_dir: Path | None = None
    content_cache_size: int = DEFAULT_CONTENT_CACHE_SIZE
    # Delete the artifact a rename of an uploaded file replaces (write/deletes.py);
    # False (--no-delete): never send a DELETE, and such renames fail with EXDEV.
    delete_artifacts: bool = True
    # Finds the token again where *token* was found (see token_reloader); the client calls it
    # (in a worker thread) when the server refuses the token. None: the token never changes.
    token_reload: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive = (
            "request_timeout",
            "connect_timeout",
            "read_timeout",
            "block_size",
            "read_part_size",
            "read_streams",
            "upload_retry_initial",
            "upload_retry_max",
        )
        non_negative = (
            "retry_attempts",
            "metadata_ttl",
            "finished_run_ttl",
            "cache_bytes",
            "readahead_per_file",
            "readahead_total",
            "spool_min_free",
            "shutdown_upload_wait",
        )
        for name in positive + non_negative:
            value = getattr(self, name)
            if math.isnan(value) or value < 0 or (value == 0 and name in positive):
                kind = "positive" if name in positive else "zero or positive"
                raise ConfigError(f"setting {name} must be {kind}, not {value}")
        if self.content_cache_size < MIN_CONTENT_CACHE_SIZE:
            raise ConfigError(
                f"--cache-dir-size {format_size(self.content_cache_size)} is less than "
                f"{format_size(MIN_CONTENT_CACHE_SIZE)}"
            )

    @classmethod
    def from_server(cls, server: ServerConfig, *, mountpoint: Path, **overrides: Any) -> Settings:
        """Build settings for a mount of *server* at *mountpoint*, with tunables from
        *overrides*; the spool is :func:`mount_spool_dir` unless *spool_dir* is given.

        Overrides whose value is None are ignored, so unset command-line options can be passed
        straight through; an unknown name is a TypeError (a programming error).
        """
        base = cls(
            url=server.url,
            token=server.token,
            offline_directory=server.offline_directory,
            spool_dir=mount_spool_dir(server.url, mountpoint),
            certificates=server.certificates,
        )
        given = {name: value for name, value in overrides.items() if value is not None}
        return dataclasses.replace(base, **given)

    @classmethod
    def for_offline(cls, directory: Path, **overrides: Any) -> Settings:
        """Build settings for a mount of the offline cache *directory* (no server, no token).

        *url* names the cache (its ``file:`` URL, for messages and mount records). Local
        listings are cheap, so finished runs are listed as often as others
        (``finished_run_ttl`` follows ``metadata_ttl`` unless given); the spool lives in
        ``<directory>/simvuefs/spool``, beside the content it lands (hard links), apart from
        any online mount's. Overrides as in :meth:`from_server`.
        """
        given = {name: value for name, value in overrides.items() if value is not None}
        base = cls(
            url=directory.as_uri(),
            token="",
            offline_directory=directory,
            spool_dir=directory / "simvuefs" / "spool",
        )
        base = dataclasses.replace(base, **given)
        if "finished_run_ttl" not in given:
            base = dataclasses.replace(base, finished_run_ttl=base.metadata_ttl)
        return base


def token_reloader(
    *, url: str | None = None, profile: str | None = None, config_file: Path | None = None
) -> Callable[[], str]:
    """Return a function that resolves the token again as :func:`resolve_server` does with
    these command-line options, from the current working directory (reads files: call it in
    a worker thread). It raises ConfigError when no usable token is found."""
    cwd = Path.cwd()

    def reload() -> str:
        return resolve_server(url=url, profile=profile, config_file=config_file, cwd=cwd).token

    return reload


def resolve_server(
    *,
    url: str | None = None,
    token: str | None = None,
    profile: str | None = None,
    config_file: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> ServerConfig:
    """Resolve URL, token and offline directory as the official client does (module docstring).

    *url*, *token*, *profile* and *config_file* are the command-line options; *cwd*, *env* and
    *home* default to the process's. Reads files synchronously: call it before the event loop
    starts. Raises ConfigError with a one-line message naming what is missing and where we looked.
    """
    env = os.environ if env is None else env
    cwd = (Path.cwd() if cwd is None else cwd).absolute()
    home = Path.home() if home is None else home
    path, where_file = _locate_config_file(config_file, cwd, home)
    data = _load_toml(path) if path is not None else {}
    selected = env.get("SIMVUE_SERVER_PROFILE", profile)
    section, label = _server_section(data, selected, where_file)
    where = f"{label} in {where_file}"

    found_url = _pick(env, "SIMVUE_URL", "--url", url, section, "url", path, label)
    if found_url is None:
        raise ConfigError(
            f"no Simvue server URL: set SIMVUE_URL, pass --url, or add url to {where}"
        )
    found_token = _pick(env, "SIMVUE_TOKEN", "--token", token, section, "token", path, label)
    if found_token is None:
        raise ConfigError(
            f"no Simvue token: set SIMVUE_TOKEN, pass --token, or add token to {where}"
        )
    api_url = api_base_url(*found_url)
    check_token(*found_token)
    return ServerConfig(
        url=api_url,
        token=found_token[0],
        url_source=found_url[1],
        token_source=found_token[1],
        offline_directory=_offline_directory(env, data, path, cwd, home),
        config_file=path,
        certificates=_certificates(env, section, f"{label} of {where_file}", cwd, home),
    )


def resolve_offline_directory(
    *,
    config_file: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """Resolve the offline cache directory as the client does, needing no URL or token.

    ``SIMVUE_OFFLINE_DIRECTORY``, else ``[offline] cache`` of the config file (found as in
    :func:`resolve_server`), else ``~/.simvue``; absolute. Raises ConfigError for an
    unreadable config file.
    """
    env = os.environ if env is None else env
    cwd = (Path.cwd() if cwd is None else cwd).absolute()
    home = Path.home() if home is None else home
    path, _ = _locate_config_file(config_file, cwd, home)
    data = _load_toml(path) if path is not None else {}
    return _offline_directory(env, data, path, cwd, home)


def _locate_config_file(explicit: Path | None, cwd: Path, home: Path) -> tuple[Path | None, str]:
    """Return the config file to read (or None) and how to name it in messages.

    *explicit* (``--config``) must exist. Otherwise the client's search applies, and the
    message names every place searched.
    """
    if explicit is not None:
        path = _absolute(explicit, cwd, home)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return path, str(path)
    found = find_config_file(cwd, home)
    if found is not None:
        return found, str(found)
    _refuse_legacy_ini(cwd, home)
    home_files = ", ".join(str(home / name) for name in CONFIG_FILE_NAMES)
    names = " and ".join(CONFIG_FILE_NAMES)
    return None, f"simvue.toml (searched: {names} in {cwd} and its parents, then {home_files})"


def find_config_file(cwd: Path, home: Path) -> Path | None:
    """Return the config file the client would read (``find_first_instance_of_file``).

    Each name in turn is searched from *cwd* up to ``/`` (stopping at an unreadable
    directory); then each name in *home*. Existence is enough, as in the client.
    """
    for name in CONFIG_FILE_NAMES:
        directory = cwd
        while os.access(directory, os.R_OK):
            if (directory / name).exists():
                return directory / name
            if directory.parent == directory:
                break
            directory = directory.parent
    for name in CONFIG_FILE_NAMES:
        if (home / name).exists():
            return home / name
    return None


def api_base_url(raw: str, source: str) -> str:
    """Return the API base for the server URL *raw*: http(s), a host, ``/api`` appended once.

    Like the client (pydantic ``AnyHttpUrl`` then ``URL / "api"``): scheme and host are
    lowercased and a default port is dropped. Unlike it, trailing slashes are removed first.
    """
    parts = urllib.parse.urlsplit(raw.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = f"'{scheme}'" if scheme else "none"
        raise ConfigError(
            f"Simvue server URL from {source} must start with http:// or https:// (scheme: {shown})"
        )
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(f"Simvue server URL from {source} has an invalid port") from None
    if not host:
        raise ConfigError(f"Simvue server URL from {source} has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"Simvue server URL from {source} must not contain a user or password")
    if parts.query or parts.fragment:
        raise ConfigError(f"Simvue server URL from {source} must not contain a query or fragment")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = parts.path.rstrip("/")
    if not path.endswith("/api"):
        path += "/api"
    return f"{scheme}://{netloc}{path}"


def check_token(token: str, source: str, now: float | None = None) -> float:
    """Return the expiry (epoch seconds) of the JWT *token*; ConfigError if it is unusable.

    Same rules as the client's ``check_token``: the payload is decoded without checking the
    signature; a non-JWT is an "invalid token form", an ``exp`` before *now* has expired.
    A JWT without ``exp`` is an error here (a KeyError in the client).
    """
    segments = token.strip().split(".")
    try:
        if len(segments) != 3:
            raise ValueError("not three segments")
        header, payload = (json.loads(_b64url_decode(segment)) for segment in segments[:2])
        _b64url_decode(segments[2])
    except (ValueError, binascii.Error):
        raise ConfigError(f"Simvue token from {source}: invalid token form (not a JWT)") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise ConfigError(f"Simvue token from {source}: invalid token form (not a JWT)")
    expiry = payload.get("exp")
    if expiry is None:
        raise ConfigError(f"Simvue token from {source} has no expiry (no 'exp' claim)")
    if isinstance(expiry, bool) or not isinstance(expiry, int | float) or math.isnan(expiry):
        raise ConfigError(f"Simvue token from {source}: invalid token form ('exp' not a number)")
    if expiry < (time.time() if now is None else now):
        when = datetime.fromtimestamp(max(expiry, 0), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise ConfigError(f"Simvue token from {source} has expired (at {when})")
    return float(expiry)


def parse_ttl(text: str) -> float:
    """Parse a cache lifetime: ``minimal`` (1 s), ``indefinite`` (inf) or seconds >= 0."""
    word = text.strip().lower()
    if word == "minimal":
        return 1.0
    if word == "indefinite":
        return math.inf
    try:
        seconds = float(word)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"invalid time to live {text!r}: use minimal, indefinite or a number of seconds >= 0"
        )
    return seconds


_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]*)")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    **{prefix: 1024**power for power, prefix in enumerate("kmgt", start=1)},
    **{f"{prefix}ib": 1024**power for power, prefix in enumerate("kmgt", start=1)},
    **{f"{prefix}b": 1000**power for power, prefix in enumerate("kmgt", start=1)},
}


def parse_size(text: str) -> int:
    """Parse a byte count: ``4096``, ``1G`` / ``256MiB`` (powers of 1024), ``10MB`` (of 1000)."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None or match["unit"] not in _SIZE_UNITS:
        raise ConfigError(
            f"invalid size {text!r}: use bytes or a number with K, M, G, T, KiB.. or KB.."
        )
    return int(float(match["number"]) * _SIZE_UNITS[match["unit"]])


def parse_count(text: str) -> int:
    """Parse a whole number of things (``8``)."""
    if not text.strip().isdigit():
        raise ConfigError(f"invalid number {text!r}: use a whole number such as 8")
    return int(text.strip())


def format_size(size: int) -> str:
    """Return *size* bytes as people write it: ``32 MiB``, ``512 KiB``, ``1000 bytes``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def memory_caps(
    *,
    cache_size: int | None = None,
    read_ahead: int | None = None,
    read_ahead_total: int | None = None,
    read_part_size: int | None = None,
    read_streams: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> dict[str, int]:
    """Return the ``Settings`` memory caps for the mount options ``--cache-size``,
    ``--read-ahead``, ``--read-ahead-total``, ``--read-part-size`` and ``--read-streams``
    (None: not given).

    Invariant of the result: ``block_size <= read_part_size <= readahead_per_file <=
    readahead_total`` (a part is claimed ahead whole), ``2 * block_size <= cache_bytes``
    and ``1 <= read_streams <= MAX_READ_STREAMS``. The cache and the read-ahead are
    independent bounds (read-ahead blocks are pinned beside the cache's kept blocks:
    read/cache.py), so the blocks in memory stay below ``cache_bytes + readahead_total``.
    A cap not given is its default, moved as far as the given ones require (the per-file
    read-ahead and the part size down, the total up), so one option alone always works;
    given caps that break the
    invariant, or one smaller than a block (the cache: two blocks), raise ConfigError naming
    the options.
    """
    for option, value, least in (
        ("--cache-size", cache_size, 2 * block_size),
        ("--read-ahead", read_ahead, block_size),
        ("--read-ahead-total", read_ahead_total, block_size),
        ("--read-part-size", read_part_size, block_size),
    ):
        if value is not None and value < least:
            raise ConfigError(
                f"{option} {format_size(value)} is less than {format_size(least)} "
                f"(read blocks are {format_size(block_size)})"
            )
    if read_streams is not None and not 1 <= read_streams <= MAX_READ_STREAMS:
        raise ConfigError(f"--read-streams {read_streams} is not between 1 and {MAX_READ_STREAMS}")
    cache = DEFAULT_CACHE_BYTES if cache_size is None else cache_size
    if read_ahead_total is not None:
        total = read_ahead_total
    else:
        total = max(DEFAULT_READAHEAD_TOTAL, read_ahead or 0)
    per_file = min(DEFAULT_READAHEAD_PER_FILE, total) if read_ahead is None else read_ahead
    if per_file > total:
        raise ConfigError(
            f"--read-ahead {format_size(per_file)} is more than --read-ahead-total "
            f"{format_size(total)}"
        )
    part = min(DEFAULT_READ_PART_SIZE, per_file) if read_part_size is None else read_part_size
    if part > per_file:
        raise ConfigError(
            f"--read-part-size {format_size(part)} is more than --read-ahead "
            f"{format_size(per_file)} (a part is fetched ahead whole)"
        )
    return {
        "cache_bytes": cache,
        "readahead_per_file": per_file,
        "readahead_total": total,
        "read_part_size": part,
        "read_streams": DEFAULT_READ_STREAMS if read_streams is None else read_streams,
    }


def _absolute(path: Path, cwd: Path, home: Path) -> Path:
    """Expand a leading ``~`` to *home* and make *path* absolute relative to *cwd*."""
    if path.parts[:1] == ("~",):
        path = home.joinpath(*path.parts[1:])
    return cwd / path


def _refuse_legacy_ini(cwd: Path, home: Path) -> None:
    """Raise like the client when only a legacy INI file (./simvue.ini, ~/.simvue.ini) exists."""
    for ini in (cwd / "simvue.ini", home / ".simvue.ini"):
        if ini.exists():
            raise ConfigError(
                f"{ini} is a legacy INI configuration, no longer supported by Simvue: "
                "write the same settings to simvue.toml (TOML format)"
            )


def _load_toml(path: Path) -> dict[str, object]:
    """Parse *path* as TOML; errors name the file and line, never echo file content."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib may quote an offending character: drop it, it could be part of the token.
        reason = re.sub(r"character .*?(?= \(at |$)", "character", str(exc))
        raise ConfigError(f"invalid TOML in {path}: {reason}") from None


def _table(data: Mapping[str, object], key: str, where_file: object) -> dict[str, object]:
    """Return the table *key* of *data* (empty when absent); ConfigError if it is not a table."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' in {where_file} must be a table")
    return value


def _server_section(
    data: Mapping[str, object], profile: str | None, where_file: str
) -> tuple[dict[str, object], str]:
    """Return the table holding url/token (``[server]`` or the profile's) and its label.

    As in the client, a selected profile that is missing or empty is an error, even when the
    environment supplies URL and token.
    """
    if not profile:
        return _table(data, "server", where_file), "[server]"
    profiles = _table(data, "profiles", where_file)
    section = profiles.get(profile)
    if not section:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(
            f"Simvue profile '{profile}' not found in {where_file} (profiles there: {known})"
        )
    label = f"[profiles.{profile}]"
    if not isinstance(section, dict):
        raise ConfigError(f"{label} in {where_file} must be a table")
    return section, label


def _pick(
    env: Mapping[str, str],
    variable: str,
    option: str,
    argument: str | None,
    section: Mapping[str, object],
    key: str,
    path: Path | None,
    label: str,
) -> tuple[str, str] | None:
    """Return (value, source) by the client's precedence: env, argument, file; or None.

    A variable that is set but empty is an error, as in the client (it does not fall back).
    """
    if variable in env:
        if not env[variable].strip():
            raise ConfigError(f"environment variable {variable} is set but empty")
        return env[variable].strip(), f"environment variable {variable}"
    if argument and argument.strip():
        return argument.strip(), f"option {option}"
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} in {label} of {path} must be a string")
    return value.strip(), f"{path} {label}"


_TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE_WORDS = frozenset({"0", "off", "f", "false", "n", "no"})
"""The strings pydantic reads as booleans, so as the client reads ``*_CA_CERTIFICATE``."""
_CERTIFICATE_KEYS = frozenset({"server_ca_cert", "storage_ca_cert", "client_cert", "client_key"})
_DEFAULT_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
"""Where a CA setting of true looks first (module docstring), in this order."""


def _certificates(
    env: Mapping[str, str], section: Mapping[str, object], label: str, cwd: Path, home: Path
) -> Certificates:
    """Resolve the TLS settings from *section*'s ``certificates`` table and *env*.

    *label* names *section* for messages (``[server] of /home/me/simvue.toml``).
    """
    where = label.replace("]", ".certificates]", 1)
    table = _table(section, "certificates", label)
    unknown = sorted(set(table) - _CERTIFICATE_KEYS)
    if unknown:
        known = ", ".join(sorted(_CERTIFICATE_KEYS))
        raise ConfigError(f"unknown key {unknown[0]!r} in {where} (known: {known})")
    client_cert = _file_setting(
        env.get("SIMVUE_SERVER_CLIENT_CERTIFICATE") or None,
        "environment variable SIMVUE_SERVER_CLIENT_CERTIFICATE",
        table.get("client_cert"),
        f"client_cert in {where}",
        cwd,
        home,
    )
    client_key = _file_setting(
        None, "", table.get("client_key"), f"client_key in {where}", cwd, home
    )
    if client_key is not None and client_cert is None:
        raise ConfigError(f"client_key in {where} needs a client_cert")
    return Certificates(
        server=_trust("server", env, table, where, cwd, home),
        storage=_trust("storage", env, table, where, cwd, home),
        client_cert=client_cert,
        client_key=client_key,
    )


def _trust(
    role: str,
    env: Mapping[str, str],
    table: Mapping[str, object],
    where: str,
    cwd: Path,
    home: Path,
) -> Trust:
    """The client's ``<role>_ca_cert``: its variable, else the table's key, else true."""
    variable, key = f"SIMVUE_{role.upper()}_CA_CERTIFICATE", f"{role}_ca_cert"
    value: object
    if variable in env:
        value, source = env[variable], f"environment variable {variable}"
    elif key in table:
        value, source = table[key], f"{key} in {where}"
    else:
        return _default_trust(role, env, cwd, home)
    if isinstance(value, bool):
        return _default_trust(role, env, cwd, home) if value else Trust(role, False, source=source)
    if not isinstance(value, str):
        raise ConfigError(f"{source} must be a file name, true or false")
    path = _absolute(Path(value), cwd, home)
    if value and path.is_file():
        return Trust(role, cafiles=(path,), source=source)
    if value.strip().lower() in _TRUE_WORDS:
        return _default_trust(role, env, cwd, home)
    if value.strip().lower() in _FALSE_WORDS:
        return Trust(role, False, source=source)
    raise ConfigError(f"{source}: {value!r} is neither a file nor true/false")


def _default_trust(role: str, env: Mapping[str, str], cwd: Path, home: Path) -> Trust:
    """A CA setting of true: every one of :data:`_DEFAULT_BUNDLES` set, else certifi's."""
    files: dict[Path, None] = {}
    directories: dict[Path, None] = {}
    variables = [variable for variable in _DEFAULT_BUNDLES if env.get(variable)]
    for variable in variables:
        path = _absolute(Path(env[variable]), cwd, home)
        if path.is_dir():
            directories[path] = None
        elif path.is_file():
            files[path] = None
        else:
            raise ConfigError(
                f"environment variable {variable}: {path} is neither a file nor a directory"
            )
    if not variables:
        return Trust(role)
    plural = "s" if len(variables) > 1 else ""
    source = f"environment variable{plural} {', '.join(variables)}"
    return Trust(role, cafiles=tuple(files), capaths=tuple(directories), source=source)


def _file_setting(
    env_value: str | None,
    env_source: str,
    table_value: object,
    table_source: str,
    cwd: Path,
    home: Path,
) -> Path | None:
    """An existing file named by the environment (*env_value*), else by the table, or None."""
    value, source = (env_value, env_source) if env_value else (table_value, table_source)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source} must be a file name")
    path = _absolute(Path(value), cwd, home)
    if not path.is_file():
        raise ConfigError(f"{source}: {path} is not a file")
    return path


def _offline_directory(
    env: Mapping[str, str], data: Mapping[str, object], path: Path | None, cwd: Path, home: Path
) -> Path:
    """``SIMVUE_OFFLINE_DIRECTORY``, else ``[offline] cache``, else ``~/.simvue``; absolute."""
    cache = _table(data, "offline", path).get("cache")
    if cache is not None and not isinstance(cache, str):
        raise ConfigError(f"cache in [offline] of {path} must be a string")
    chosen = env.get("SIMVUE_OFFLINE_DIRECTORY") or cache or str(home / ".simvue")
    return _absolute(Path(chosen), cwd, home)


def _b64url_decode(segment: str) -> bytes:
    """Decode unpadded base64url as PyJWT does (padding restored)."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))

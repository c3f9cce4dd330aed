"""Settings: where the server is, how to authenticate, and the tunables of a mount.

Server URL and token are resolved exactly as the official ``simvue`` client resolves them
(protocol section 1): environment variables win, then ``simvue.toml`` searched upward from
the working directory, then ``.simvue.toml``, then the home files; a profile selected with
``SIMVUE_SERVER_PROFILE`` (or ``--profile``) reads ``[profiles.<name>]``; ``/api`` is appended.
Command-line options sit between the environment and the files, as the client's explicit
arguments do.

The token never appears in ``repr``, logs or error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything a mount, the client and the tools need; immutable once built.

    *url* is the API base, ending in ``/api`` (e.g. ``http://127.0.0.1:8765/api``).
    """

    url: str
    token: str = field(repr=False)
    # Deadline for one filesystem-level operation (a lookup, a read, a close): no FUSE request
    # waits on the network longer than this, retries included.
    request_timeout: float = 30.0
    connect_timeout: float = 5.0
    # Longest silence tolerated while receiving a response body (a stalled server).
    read_timeout: float = 10.0
    # Attempts for 502/503/504 and connection errors, within request_timeout.
    retry_attempts: int = 4
    # How long listings and attributes are trusted (seconds; float("inf") = indefinite).
    metadata_ttl: float = 1.0
    # How long listings of finished runs are trusted.
    finished_run_ttl: float = 60.0
    block_size: int = 1 * MIB
    cache_bytes: int = 256 * MIB
    readahead_per_file: int = 32 * MIB
    readahead_total: int = 128 * MIB
    verify_tls: bool = True

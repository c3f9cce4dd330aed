"""Command-line options of ``simvuefs devserver``.

Only argparse and the standard library: ``simvuefs.cli`` imports this module to build its
parser even when the devserver's extra packages (Starlette, uvicorn) are not installed.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

MIB = 1024 * 1024
DEFAULT_LARGE_SIZE = 256 * MIB
DEFAULT_URL_EXPIRY = 3600.0
REALISTIC_MAX_UPLOAD = 5 * 1024**3
"""``--max-upload-size`` under ``--realistic``: S3's limit for one PUT (or POST) upload."""

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": MIB,
    "mb": 1000**2,
    "mib": MIB,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse a byte count such as ``1048576``, ``64MiB``, ``1G`` or ``500kB``."""
    match = _SIZE_PATTERN.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 4096, 64MiB, 1G)")
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r} (0 picks a free port)")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the devserver's options to *parser*."""
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="DIR",
        help="data directory (created if missing): simvue.db, blobs/, secret",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=0, help="TCP port; 0 picks a free one (default %(default)s)"
    )
    parser.add_argument(
        "--write-config",
        type=Path,
        metavar="FILE",
        help="write a simvue.toml with the server URL and a fresh token to FILE",
    )
    parser.add_argument(
        "--seed",
        choices=["demo", "multiuser"],
        help="fill an empty data directory with demo runs and artifacts (multiuser: also "
        "runs of two other users, some shared with the default user; see seed.py)",
    )
    parser.add_argument(
        "--large-size",
        type=parse_size,
        default=DEFAULT_LARGE_SIZE,
        metavar="BYTES",
        help="size of the large generated demo artifact (default 256MiB)",
    )
    parser.add_argument(
        "--upload-style",
        choices=["put", "post"],
        default="post",
        help="presigned PUT of the raw body, or S3-style multipart POST with fields "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--url-expiry",
        type=_seconds,
        default=DEFAULT_URL_EXPIRY,
        metavar="SECONDS",
        help="lifetime of signed storage URLs (default %(default)s)",
    )
    parser.add_argument(
        "--storage-url",
        default="",
        metavar="URL",
        help="hand out download URLs under this base URL (<URL>/<sha256>): a static file "
        "server such as nginx serving the data directory's blobs/ (uploads still come here)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve HTTPS (API and storage) with this PEM certificate (chain); its key is in "
        "--tls-key or in the same file",
    )
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="the key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="with --tls-cert: require client certificates signed by the CAs in FILE",
    )
    parser.add_argument(
        "--redirect-port",
        type=_port,
        metavar="PORT",
        help="also listen on PORT (plain HTTP, same host; 0 picks a free one) and answer every "
        "request there with a redirect to the same path on the server's URL, as a proxy in "
        "front of a server does (the URL is announced on a line before the listening line)",
    )
    parser.add_argument(
        "--redirect-status",
        type=int,
        choices=[301, 302, 303, 307, 308],
        default=308,
        help="the status of --redirect-port's redirects (default %(default)s)",
    )
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="behave as the real Simvue server is believed to (docs/compatibility.md): the "
        "behaviours it turns on are listed in docs/architecture.md's devserver section: "
        "run listings hold metadata, system, metrics and alerts only when asked for "
        "(return_metadata=True, ...) and are newest first unless sorted; storage refuses "
        "uploads over 5GiB (--max-upload-size)",
    )
    parser.add_argument(
        "--no-dedup",
        action="store_true",
        help="always ask for an upload, even when content with that checksum is stored",
    )
    parser.add_argument(
        "--max-upload-size",
        type=parse_size,
        metavar="BYTES",
        help="storage refuses larger uploads with S3's 400 EntityTooLarge, as a single PUT "
        "or POST over the storage's limit is (default: no limit; with --realistic, 5GiB, "
        "S3's single-upload limit)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a fault switch at start (see GET /admin/faults); repeatable",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log level on stderr (default %(default)s); the access log is never written, "
        "since it would show signed URLs",
    )

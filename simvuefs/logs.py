"""Logging setup and the user-facing error type for the command line.

Named ``logs`` rather than ``logging`` so it never shadows the standard library module.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s: %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"


class UsageError(Exception):
    """An error the user can fix; ``cli.main`` prints its one-line message and exits.

    *exitcode* is the process exit status (2 for bad arguments, 1 otherwise).
    """

    def __init__(self, message: str, exitcode: int = 1) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def setup_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    """Send log records at *level* and above to *log_file*, or to stderr when it is None."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO, with full URLs (signed query strings included).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)

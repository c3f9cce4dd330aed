"""simvuefs: a FUSE filesystem that mounts a Simvue server's runs as directories.

``simvuefs.mounted`` and ``simvuefs.MountError`` (the Python API, ``simvuefs/api.py``) are
loaded on first use, so importing the package loads nothing else.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["MountError", "__version__", "mounted"]


def __getattr__(name: str) -> Any:
    if name in ("mounted", "MountError"):
        from simvuefs import api

        return getattr(api, name)
    raise AttributeError(f"module 'simvuefs' has no attribute {name!r}")

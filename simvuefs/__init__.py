"""simvuefs: a FUSE filesystem that mounts a Simvue server's runs as directories."""

__version__ = "0.1.0"

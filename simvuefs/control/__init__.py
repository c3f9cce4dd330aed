"""Host-side commands and records: what runs outside the mount daemon.

Nothing here imports pyfuse3 or httpx, so ``simvuefs status`` and ``simvuefs unmount`` stay
light and work when the daemon is gone.
"""

"""Host-side commands and records: what runs outside the mount daemon.

``mounts`` (the mount table, mount-point checks, the one way a mount process is started,
unmount), ``readiness`` (the pipe a mount process reports on), ``registry`` (the records of
writable mounts), ``counters`` (the live counters file: path, format, reading), ``status``
(``simvuefs status``), ``pending`` (``simvuefs pending retry|export|drop``), ``export`` (its
copies of pending uploads and their manifest) and ``mounthelper`` (``mount.simvuefs`` for
mount(8) and fstab).

Nothing here imports pyfuse3 or httpx, so ``simvuefs status`` and ``simvuefs unmount`` stay
light and work when the daemon is gone (tests/unit/test_status.py runs them and checks).
"""

"""The content cache on disk (``--cache-dir``): artifact content kept by its SHA-256, in parts.

``store`` is the directory's layout and every operation on it (synchronous: callers run them
in worker threads); ``usage`` measures and evicts (also used by ``simvuefs cache``, so it
imports nothing that loads httpx); ``cells`` is the cache as one process uses it (planning,
claims, stores); ``stream`` serves open-ended reads and ``source`` is the
:class:`~simvuefs.diskcache.source.CachingSource` the reader reads through. SEMANTICS.md
"Content cache" is the user's contract.
"""
